"""Building and checking the App Center package: nothing here runs as part of a check on the NAS."""
