"""The control plane: the controller, changes, persistence, reload, the REST API."""
