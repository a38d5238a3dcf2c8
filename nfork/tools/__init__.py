"""Command-line tools: the nfork command and replay."""
