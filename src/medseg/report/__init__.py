"""Reports: read run folders and result tables, write PNG/HTML (imports engine/, never cli/)."""
