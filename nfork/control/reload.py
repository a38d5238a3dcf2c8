"""Reloading the configuration file into a running process (SIGHUP)."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen
from twisted.logger import Logger

from nfork.config import ConfigError, InboundConfig, load_config_file
from nfork.control.controller import Controller
from nfork.outbounds.registry import check_inbounds

_log = Logger()


@frozen
class ReloadResult:
    """What a reload changed, by inbound name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


async def apply_configs(
    controller: Controller, wanted: Sequence[InboundConfig]
) -> ReloadResult:
    """Make the running inbounds match C{wanted}.

    Inbounds that left the file stop, new ones start, changed ones are
    updated in place (outbounds that did not change keep their stats).
    Removals come first so that an address can move between inbounds. An
    inbound that cannot start is logged and skipped; the others still apply.
    """
    current = {config.name: config for config in controller.configs()}
    by_name = {config.name: config for config in wanted}
    removed = tuple(name for name in current if name not in by_name)
    for name in removed:
        await controller.remove_inbound(name)
    updated: list[str] = []
    added: list[str] = []
    failed: list[str] = []
    for config in wanted:
        previous = current.get(config.name)
        if previous == config:
            continue
        try:
            if previous is None:
                await controller.add_inbound(config)
                added.append(config.name)
            else:
                await controller.update_inbound(config)
                updated.append(config.name)
        except Exception as e:
            _log.error(
                "reload: inbound {name} not applied: {error}", name=config.name, error=e
            )
            failed.append(config.name)
    return ReloadResult(tuple(added), removed, tuple(updated), tuple(failed))


async def reload_file(controller: Controller, path: str) -> ReloadResult | None:
    """Reload C{path}; an invalid file changes nothing and is logged."""
    try:
        wanted = load_config_file(path)
        check_inbounds(wanted, controller.factories)
    except ConfigError as e:
        _log.error(
            "reload: {path} is invalid, nothing changed: {error}", path=path, error=e
        )
        return None
    result = await apply_configs(controller, wanted)
    _log.info(
        "reload of {path}: added {added}, removed {removed}, updated {updated}, "
        "failed {failed}",
        path=path,
        added=list(result.added),
        removed=list(result.removed),
        updated=list(result.updated),
        failed=list(result.failed),
    )
    return result
