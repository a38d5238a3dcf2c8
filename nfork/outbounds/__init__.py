"""The extension point: outbound interfaces, the plugin registry, built-in outbounds."""
