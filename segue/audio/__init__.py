"""Audio front end, track catalogue, the DSC-7 corpus and the listener simulator (issue 8)."""
