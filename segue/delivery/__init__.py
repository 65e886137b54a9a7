"""Reward-delivery prediction for crowdfunding projects (dissertation chapter 3; spec Part B).

Its own package: it uses :mod:`segue.errors` and nothing of the recommender code (no
``segue.models``, ``segue.training``, ``segue.evaluation``, ``segue.data``). See docs/delivery.md.

- :mod:`~segue.delivery.schema`: project / reward / comment / update tables, loaders, validation;
- :mod:`~segue.delivery.features`: Table 3.1 features at TP1-TP4;
- :mod:`~segue.delivery.clusters`: semantic reward clusters (word2vec, k-means, BIC of Eq. 3.1);
- :mod:`~segue.delivery.lexicon`: the LIWC stand-in (Empath) and LIWC ``.dic`` files;
- :mod:`~segue.delivery.selection`: VIF, Boruta, t-test, stepAIC;
- :mod:`~segue.delivery.models`: classifiers and regressors of Tables 3.3-3.5, cross-validation, saving;
- :mod:`~segue.delivery.synthetic`: the SYNTHETIC generator.
"""
