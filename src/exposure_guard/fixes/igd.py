"""Deleting a UPnP port mapping on the router (``DeletePortMapping``); undo re-adds it with the same
parameters, only while the port is still free or still leads to the same host."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from exposure_guard.context import CheckContext
from exposure_guard.errors import ExposureGuardError, HostileResponse, JournalEntryRefused
from exposure_guard.fixes.actions import Action, register_action_kind
from exposure_guard.fixes.journal import ChangeJournal, ChangeRecord
from exposure_guard.upnp.errors import SoapFault, UpnpError
from exposure_guard.upnp.models import PortMapping, WanService

# The SOAP client pulls in requests: imported where used, so a local-only run starts fast.


@register_action_kind
class IgdMappingDeleteAction(Action):
    """``DeletePortMapping`` on the router's IGD; undo re-adds the mapping with the same parameters."""

    kind = "igd-mapping-delete"

    def __init__(self, check_id: str, control_url: str, service_type: str, mapping: PortMapping) -> None:
        super().__init__(check_id)
        self.service = WanService(service_type, control_url)
        self.mapping = mapping

    @property
    def target(self) -> str:
        return "IGD %s mapping %s" % (self.service.control_url, self.mapping.arrow())

    @property
    def after(self) -> Optional[str]:
        return "absent"

    def _live(self) -> Optional[PortMapping]:
        from exposure_guard.upnp import soap

        client = soap.SoapClient(self.service)
        try:
            return soap.specific_mapping(client, *self.mapping.key)
        finally:
            client.close()

    def current(self, ctx: CheckContext) -> Optional[str]:
        try:
            live = self._live()
        except UpnpError as exc:
            return "unknown (%s)" % exc
        return _state(live)

    def needed(self, ctx: CheckContext) -> bool:
        try:
            live = self._live()
        except SoapFault as fault:
            return fault.code == 401  # no GetSpecificPortMappingEntry on this router: try the delete
        except UpnpError:
            return True  # the delete itself will fail and say why
        # Only while it still leads to this NAS: a port re-used by another host is not ours to delete.
        return live is not None and (live.internal_client, live.internal_port) == \
            (self.mapping.internal_client, self.mapping.internal_port)

    def params(self) -> Dict[str, Any]:
        return {"control_url": self.service.control_url, "service_type": self.service.service_type,
                "mapping": self.mapping.to_dict()}

    def apply(self, ctx: CheckContext, journal: ChangeJournal, change_id: str) -> Dict[str, Any]:
        from exposure_guard.upnp import soap

        client = soap.SoapClient(self.service)
        try:
            soap.delete_mapping(client, self.mapping)
        finally:
            client.close()
        return {}

    @classmethod
    def undo(cls, ctx: CheckContext, record: ChangeRecord) -> str:
        from exposure_guard.upnp import soap

        mapping, service = _from_params(record.params)
        client = soap.SoapClient(service)
        try:
            live = soap.specific_mapping(client, *mapping.key)
            if live is not None:
                if (live.internal_client, live.internal_port) == (mapping.internal_client, mapping.internal_port):
                    return "mapping %s is already back on the router" % mapping.arrow()
                raise ExposureGuardError("cannot re-add %s: the router now maps that port to %s:%d; left as is"
                                         % (mapping.arrow(), live.internal_client, live.internal_port))
            try:
                soap.add_mapping(client, mapping)
            except SoapFault as fault:
                raise ExposureGuardError("cannot re-add %s on %s: %s" % (mapping.arrow(), service.control_url,
                                                                         fault)) from None
        finally:
            client.close()
        return "re-added mapping %s (%r, lease %d s) on %s" % (mapping.arrow(), mapping.description,
                                                                mapping.lease_duration, service.control_url)

    def describe(self, ctx: CheckContext) -> str:
        return "delete the router's UPnP mapping %s%s" % (
            self.mapping.labelled(), " (IGD %s)" % self.service.control_url)


def _from_params(params: Dict[str, Any]) -> Tuple[PortMapping, WanService]:
    """The mapping and service a journal line names, or JournalEntryRefused when the line is damaged."""
    from exposure_guard.hostilehttp import check_url

    try:
        mapping = PortMapping.from_dict(params["mapping"])
        url, service_type = params["control_url"], params["service_type"]
        if not isinstance(url, str) or not isinstance(service_type, str):
            raise TypeError
        check_url(url)
    except (KeyError, TypeError, ValueError, AttributeError, HostileResponse):
        raise JournalEntryRefused("its mapping, control URL or service type is missing or damaged") from None
    if mapping.protocol not in ("TCP", "UDP") or not (0 <= mapping.external_port <= 65535
                                                       and 0 <= mapping.internal_port <= 65535):
        raise JournalEntryRefused("its mapping %s is not a TCP or UDP port mapping" % mapping.arrow())
    return mapping, WanService(service_type, url)


def _state(mapping: Optional[PortMapping]) -> str:
    if mapping is None:
        return "absent"
    return "%s%s lease %d s" % (mapping.labelled(), "" if mapping.enabled else " (disabled)",
                                mapping.lease_duration)
