"""The configuration: models, loading and checks, error wording, addresses, durations.

The file format is gonfork's C{nfork.json}, a JSON array of inbound objects,
with a few keys of our own.  L{nfork.config.load} reads it into the models of
L{nfork.config.model}, which check their values however they are built; every
problem is reported as one L{ConfigError} (L{nfork.config.errors}) whose
message names the inbound, the key and what is wrong with it.
"""

from nfork.config.errors import ConfigError
from nfork.config.load import (
    check_unique,
    decode_json,
    dump_config,
    load_config,
    load_config_file,
    parse_inbound,
    parse_outbound,
)
from nfork.config.model import (
    DEFAULT_ERROR_CODE,
    DEFAULT_IDLE_CONN,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MIRROR_BODY,
    DEFAULT_STATS_WINDOW,
    DEFAULT_TIMEOUT,
    DEFAULT_TIMEOUT_CODE,
    OUTBOUND_KEYS,
    InboundConfig,
    OutboundConfig,
    OutboundOptions,
)

__all__ = [
    "DEFAULT_ERROR_CODE",
    "DEFAULT_IDLE_CONN",
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_MIRROR_BODY",
    "DEFAULT_STATS_WINDOW",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT_CODE",
    "OUTBOUND_KEYS",
    "ConfigError",
    "InboundConfig",
    "OutboundConfig",
    "OutboundOptions",
    "check_unique",
    "decode_json",
    "dump_config",
    "load_config",
    "load_config_file",
    "parse_inbound",
    "parse_outbound",
]
