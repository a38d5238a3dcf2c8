"""twistd plugin: makes `twistd nfork` available."""

from twisted.application.service import ServiceMaker

nfork = ServiceMaker(
    "nfork",
    "nfork.app.tap",
    "HTTP live-traffic duplication proxy (gonfork successor).",
    "nfork",
)
