"""Access to a QTS system: config files, identity, listeners, services, event log (all root-relative)."""
