"""Facts about the NAS and its network that checks share: config keys, ports, the router audit, the callback."""
