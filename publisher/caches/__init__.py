"""What is kept between builds: the state files and the one atomic writer (statefiles), the scan
cache (scan_cache) and the feed fingerprints (fingerprints)."""
