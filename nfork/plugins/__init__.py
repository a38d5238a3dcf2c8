"""Drop-in directory for outbound plugins (IOutboundFactory providers).

Third-party distributions add outbound schemes by installing a module here;
see docs/plugins.md.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
