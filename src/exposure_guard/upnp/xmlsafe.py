"""XML from LAN devices, parsed with defusedxml: entities, external references and bombs are refused."""

from __future__ import annotations

from typing import Dict, Iterator, Optional
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from exposure_guard.upnp.errors import HostileResponse, UpnpError

MAX_DEPTH = 32


def parse_xml(data: bytes, what: str) -> Element:
    """Parse ``data``; refuse DTD entity tricks (XML bombs, XXE) with HostileResponse, garbage with UpnpError."""
    try:
        root = fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise HostileResponse("%s contains XML we refuse to process (%s: entity declarations, external "
                              "references or an XML bomb)" % (what, type(exc).__name__)) from None
    except (ParseError, ValueError) as exc:
        raise UpnpError("%s is not well-formed XML (%s)" % (what, str(exc)[:200])) from None
    if _depth(root) > MAX_DEPTH:
        raise HostileResponse("%s nests elements more than %d deep; refused" % (what, MAX_DEPTH))
    return root


def local(tag: str) -> str:
    """``{urn:...}controlURL`` → ``controlURL``"""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def child(element: Element, name: str) -> Optional[Element]:
    for item in element:
        if local(item.tag) == name:
            return item
    return None


def text_of(element: Optional[Element], name: str, limit: int = 1024) -> str:
    found = child(element, name) if element is not None else None
    if found is None or found.text is None:
        return ""
    return found.text.strip()[:limit]


def children_text(element: Element, limit: int = 4096) -> Dict[str, str]:
    """Local name → stripped text of the direct children (the arguments of a SOAP response)."""
    return {local(item.tag): (item.text or "").strip()[:limit] for item in element}


def walk(element: Element, name: str) -> Iterator[Element]:
    for item in element.iter():
        if local(item.tag) == name:
            yield item


def _depth(element: Element, level: int = 1) -> int:
    deepest = level
    stack = [(element, level)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((item, depth + 1) for item in node)
    return deepest
