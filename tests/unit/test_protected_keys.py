"""The owner's ways in — admin web port, HTTPS (Stunnel) switch and port, forced SSL, SSH switch and port —
are refused by ``ConfigKeyAction`` itself, whatever a check asks and however it spells the names."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposure_guard.errors import ExposureGuardError
from exposure_guard.fixes.actions import PROTECTED_KEYS, ConfigKeyAction
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.root import QtsRoot

ULINUX = "etc/config/uLinux.conf"

# Written out on purpose: dropping one of these from the code must fail a test.
EXPECTED = [
    ("System", "Web Access Port"),
    ("Stunnel", "Enable"),
    ("Stunnel", "Port"),
    ("System", "Force SSL"),
    ("LOGIN", "SSH Enable"),
    ("LOGIN", "SSH Port"),
]


def spellings(section: str, key: str) -> list:
    return [
        (section, key),
        (section.lower(), key.lower()),
        (section.upper(), key.upper()),
        (section.swapcase(), key.title()),
        (" %s" % section, "%s " % key),
        ("%s  " % section, "  %s" % key),
        ("\t%s\t" % section.lower(), " %s\t" % key.upper()),
    ]


def test_the_protected_list_is_exactly_the_six_ways_in():
    assert frozenset((s.lower(), k.lower()) for s, k in EXPECTED) == PROTECTED_KEYS
    assert len(PROTECTED_KEYS) == 6


CASES = [(s, k, vs, vk) for s, k in EXPECTED for vs, vk in spellings(s, k)]


@pytest.mark.parametrize("section,key,asked_section,asked_key", CASES,
                         # ids without escapes: an id holding "\\t" cannot be selected back on a command line
                         ids=["%s/%s/%d" % (c[0], c[1], i) for i, c in enumerate(CASES)])
def test_every_protected_key_is_refused_in_any_spelling(section, key, asked_section, asked_key):
    with pytest.raises(ExposureGuardError, match="refusing to plan a change of .* it could lock the owner out"):
        ConfigKeyAction("any.check", ULINUX, asked_section, asked_key, "0")


@pytest.mark.parametrize("section,key", EXPECTED)
@pytest.mark.parametrize("file", [ULINUX, "/" + ULINUX, "etc/default_config/uLinux.conf", "etc/other.conf"])
def test_protected_key_is_refused_in_any_file(section, key, file):
    with pytest.raises(ExposureGuardError):
        ConfigKeyAction("any.check", file, section, key, "TRUE")


@settings(max_examples=200, deadline=None)
@given(pair=st.sampled_from(EXPECTED), data=st.data())
def test_any_casing_and_padding_of_a_protected_key_is_refused(pair, data):
    def recase(text: str) -> str:
        flips = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
        return "".join(c.upper() if f else c.lower() for c, f in zip(text, flips))

    pad = st.text(alphabet=" \t", max_size=3)
    section = data.draw(pad) + recase(pair[0]) + data.draw(pad)
    key = data.draw(pad) + recase(pair[1]) + data.draw(pad)
    with pytest.raises(ExposureGuardError):
        ConfigKeyAction("any.check", ULINUX, section, key, data.draw(st.sampled_from(["0", "1", "FALSE", "2222"])))


@pytest.mark.parametrize("section,key", [
    ("LOGIN", "TELNET Enable"),  # what service.telnet turns off
    ("System", "Web Access"),  # a neighbour, not the port
    ("Stunnel", "Ports"),
    ("Login", "SSH Enabled"),
    ("SSH", "Port"),  # the right key in another section
    ("System", "Port"),
])
def test_keys_next_to_the_protected_ones_can_still_be_planned(section, key):
    action = ConfigKeyAction("x", "/" + ULINUX, section, key, "FALSE")
    assert action.params() == {"file": ULINUX, "section": section, "key": key, "value": "FALSE"}


def test_a_padded_name_would_reach_the_real_key_so_refusing_only_exact_names_is_not_enough(tmp_path: Path):
    # The config reader matches section and key ignoring case and surrounding spaces: " ssh port " IS the
    # owner's SSH port. The refusal must be at least as forgiving, or a padded name slips through.
    (tmp_path / "etc/config").mkdir(parents=True)
    text = "[LOGIN]\nSSH Enable = TRUE\nSSH Port = 22\n[Stunnel]\nEnable = 1\nPort = 443\n"
    (tmp_path / ULINUX).write_text(text)
    config = QtsConfig(QtsRoot(tmp_path))
    assert config.getcfg(" login ", " ssh port ", ULINUX) == "22"
    assert config.getcfg("STUNNEL ", "  port", ULINUX) == "443"
    for section, key in [(" login ", " ssh port "), ("STUNNEL ", "  port")]:
        with pytest.raises(ExposureGuardError):
            ConfigKeyAction("x", ULINUX, section, key, "0")
    assert (tmp_path / ULINUX).read_text() == text
