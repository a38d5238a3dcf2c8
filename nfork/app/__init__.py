"""The twistd application: options, services, signals, the demo."""
