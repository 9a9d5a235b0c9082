"""Errors from talking to a UPnP device. All are ExposureGuardError, so a fix that fails is journaled."""

from __future__ import annotations

from exposure_guard.errors import HostileResponse, PeerError

# The UPnP client's name for the peer errors of the guarded HTTP transport (hostilehttp.py).
UpnpError = PeerError

__all__ = ["UPNP_ERRORS", "HostileResponse", "SoapFault", "UpnpError"]


class SoapFault(UpnpError):
    """A SOAP fault with the UPnP error code, e.g. 713 SpecifiedArrayIndexInvalid."""

    def __init__(self, action: str, code: int, description: str, url: str = "") -> None:
        self.action, self.code, self.description, self.url = action, code, description, url
        meaning = UPNP_ERRORS.get(code, "")
        text = "%s failed with UPnP error %d %s" % (action, code, description or meaning)
        if meaning and description and meaning.lower() != description.lower():
            text += " (%s)" % meaning
        super().__init__(text + (" at %s" % url if url else ""))


# UPnP IGD error codes (WANIPConnection:2 spec, section 2.4) with what they mean for the owner.
UPNP_ERRORS = {
    401: "Invalid Action: the router does not offer this action",
    402: "Invalid Args",
    501: "Action Failed",
    606: "Action not authorized: the router refuses this change",
    713: "SpecifiedArrayIndexInvalid (end of the mapping list)",
    714: "NoSuchEntryInArray: no such mapping",
    718: "ConflictInMappingEntry: the port is mapped to another client",
    724: "SamePortValuesRequired",
    725: "OnlyPermanentLeasesSupported",
    726: "RemoteHostOnlySupportsWildcard",
    727: "ExternalPortOnlySupportsWildcard",
    728: "NoPortMapsAvailable",
    729: "ConflictWithOtherMechanisms",
    732: "WildCardNotPermittedInIntPort",
}
