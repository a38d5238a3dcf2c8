"""The data path: inbound server, fork, client pool, deadlines, headers, stats."""
