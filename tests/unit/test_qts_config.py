"""getcfg/setcfg semantics of the QTS config reader and writer."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exposure_guard.errors import ConfigFileError
from exposure_guard.qts.config import ConfigDocument, QtsConfig, parse_bool
from exposure_guard.qts.root import QtsRoot

SAMPLE = (
    b"key0 = top\n"
    b"[System]\n"
    b"Web Access Port = 8080\n"
    b"Server Name=NAS1\n"
    b"# comment = ignored\n"
    b"; also = ignored\n"
    b"[Stunnel]\n"
    b"Enable = 1\n"
    b"[System]\n"
    b"Force SSL = 1\n"
    b"Web Access Port = 9999\n"
)


def test_getcfg_case_insensitive_sections_and_keys():
    doc = ConfigDocument(SAMPLE)
    assert doc.get("SYSTEM", "web access port") == "8080"
    assert doc.get("system", "SERVER NAME") == "NAS1"
    assert doc.get("Stunnel", "Enable") == "1"


def test_section_ends_at_next_bracket_and_first_match_wins():
    doc = ConfigDocument(SAMPLE)
    assert doc.get("Stunnel", "Web Access Port") is None
    assert doc.get("System", "Web Access Port") == "8080"  # not the later duplicate
    assert doc.get("System", "Force SSL") == "1"  # from the repeated section


def test_empty_section_for_keys_before_any_section_and_comments_ignored():
    doc = ConfigDocument(SAMPLE)
    assert doc.get("", "key0") == "top"
    assert doc.get("System", "# comment") is None
    assert doc.get("System", "; also") is None


def test_getcfg_default_and_missing_file(tmp_path: Path):
    (tmp_path / "etc/config").mkdir(parents=True)
    (tmp_path / "etc/config/uLinux.conf").write_bytes(SAMPLE)
    config = QtsConfig(QtsRoot(tmp_path))
    assert config.getcfg("System", "Server Name") == "NAS1"  # default file is uLinux.conf
    assert config.getcfg("System", "Nope", default="d") == "d"
    assert config.getcfg("UPnP_Global", "Enable", "etc/config/upnpc.conf", "FALSE") == "FALSE"
    with pytest.raises(ConfigFileError, match="does not exist"):
        config.document("etc/config/upnpc.conf")


def test_crlf_and_spaces():
    doc = ConfigDocument(b"[A]\r\nx=1\r\n  y   =   two words  \r\n")
    assert doc.get("a", "x") == "1"
    assert doc.get("a", "y") == "two words"


def test_non_utf8_bytes_survive():
    doc = ConfigDocument(b"[A]\nname = N\xe4s\xff\n")
    assert doc.get("A", "name").startswith("N")
    new = doc.with_value("A", "other", "v")
    assert new.startswith(b"[A]\nname = N\xe4s\xff\n")


@pytest.mark.parametrize(
    "value,expected",
    [("TRUE", True), ("true", True), ("1", True), ("yes", True), ("Yes", True), ("FALSE", False), ("0", False),
     ("no", False), ("No", False), ("", False), ("maybe", None), (None, None), (' "TRUE" ', True)],
)
def test_parse_bool(value, expected):
    assert parse_bool(value) is expected


def test_setcfg_changes_only_the_one_line():
    doc = ConfigDocument(SAMPLE)
    new = doc.with_value("system", "WEB ACCESS PORT", "18080")
    old_lines, new_lines = SAMPLE.splitlines(), new.splitlines()
    diff = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert diff == [2]
    assert new_lines[2] == b"Web Access Port = 18080"  # key spelling and spacing kept


def test_setcfg_keeps_compact_style_and_crlf():
    new = ConfigDocument(b"[A]\r\nx=1\r\ny=2\r\n").with_value("A", "x", "5")
    assert new == b"[A]\r\nx=5\r\ny=2\r\n"


def test_setcfg_adds_key_at_end_of_section_and_new_section_at_end():
    doc = ConfigDocument(b"[A]\nx = 1\n\n[B]\ny = 2\n")
    assert doc.with_value("a", "z", "3") == b"[A]\nx = 1\nz = 3\n\n[B]\ny = 2\n"
    assert doc.with_value("C", "k", "v") == b"[A]\nx = 1\n\n[B]\ny = 2\n[C]\nk = v\n"
    assert ConfigDocument(b"[A]\nx = 1").with_value("B", "k", "v") == b"[A]\nx = 1\n[B]\nk = v\n"
    assert ConfigDocument(b"").with_value("A", "k", "v") == b"[A]\nk = v\n"


def test_erase_removes_one_line():
    assert ConfigDocument(b"[A]\nx = 1\ny = 2\n").without_key("a", "X") == b"[A]\ny = 2\n"


def test_setcfg_write_is_atomic_and_keeps_mode(tmp_path: Path):
    conf = tmp_path / "etc/config/uLinux.conf"
    conf.parent.mkdir(parents=True)
    conf.write_bytes(SAMPLE)
    os.chmod(conf, 0o640)
    inode_before = conf.stat().st_ino
    QtsConfig(QtsRoot(tmp_path)).setcfg("System", "Server Name", "NAS2")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert conf.stat().st_ino != inode_before  # replaced by rename, not rewritten in place
    assert ConfigDocument(conf.read_bytes()).get("System", "Server Name") == "NAS2"
    assert not [p for p in conf.parent.iterdir() if p.name.endswith(".tmp")]


def test_huge_file_is_read(tmp_path: Path):
    conf = tmp_path / "etc/config/uLinux.conf"
    conf.parent.mkdir(parents=True)
    filler = b"[Filler]\n" + b"k%d = %s\n" * 1
    with conf.open("wb") as handle:
        handle.write(b"[System]\nWeb Access Port = 8080\n")
        line = b"padding = " + b"x" * 1000 + b"\n"
        handle.write(filler.replace(b"%d", b"0").replace(b"%s", b"0"))
        for _ in range(50 * 1024):  # ~50 MB
            handle.write(line)
        handle.write(b"[Stunnel]\nPort = 4443\n")
    assert conf.stat().st_size > 50 * 1000 * 1000
    config = QtsConfig(QtsRoot(tmp_path))
    assert config.getcfg("Stunnel", "Port") == "4443"


SETCFG_DOUBLE = Path(__file__).resolve().parent.parent / "fixtures" / "bin" / "setcfg"


@pytest.mark.skipif(shutil.which("awk") is None, reason="awk is needed by the setcfg test double")
@pytest.mark.parametrize(
    "content,section,key,value",
    [
        (SAMPLE, "System", "Web Access Port", "18080"),
        (SAMPLE, "stunnel", "ENABLE", "0"),
        (SAMPLE, "Stunnel", "Port", "4443"),
        (SAMPLE, "New Section", "Some Key", "v"),
        (b"[A]\r\nx=1\r\ny=2\r\n", "A", "y", "3"),
        (b"[A]\r\nx=1\r\n", "A", "z", "3"),
        (b"[UPnP_Global]\nEnable = TRUE\n", "UPnP_Global", "Enable", "FALSE"),
    ],
)
def test_setcfg_tool_path_gives_the_same_file(tmp_path: Path, content, section, key, value):
    """On a NAS writes go through /sbin/setcfg; both paths must give the same bytes."""
    results = []
    for use_tools in (False, True):
        root = tmp_path / ("tool" if use_tools else "python")
        (root / "etc/config").mkdir(parents=True)
        (root / "sbin").mkdir()
        shutil.copy(str(SETCFG_DOUBLE), str(root / "sbin/setcfg"))
        (root / "etc/config/x.conf").write_bytes(content)
        calls = root / "calls"
        if use_tools:
            wrapper = root / "sbin/setcfg"
            wrapper.write_text("#!/bin/sh\necho \"$@\" >> %s\nexec sh %s \"$@\"\n" % (calls, SETCFG_DOUBLE))
            wrapper.chmod(0o755)
        QtsConfig(QtsRoot(root, use_tools=use_tools)).setcfg(section, key, value, "etc/config/x.conf")
        assert calls.exists() == use_tools  # the tool was really used (or not)
        results.append((root / "etc/config/x.conf").read_bytes())
    assert results[0] == results[1]


def test_setcfg_tool_failure_is_a_clear_error(tmp_path: Path):
    (tmp_path / "sbin").mkdir()
    (tmp_path / "etc/config").mkdir(parents=True)
    (tmp_path / "etc/config/uLinux.conf").write_bytes(SAMPLE)
    tool = tmp_path / "sbin/setcfg"
    tool.write_text("#!/bin/sh\necho 'no space left' >&2\nexit 3\n")
    tool.chmod(0o755)
    with pytest.raises(ConfigFileError, match="exit 3.*no space left"):
        QtsConfig(QtsRoot(tmp_path, use_tools=True)).setcfg("System", "x", "y")


def test_busybox_sh_runs_the_double():
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.skip("busybox not installed")
    out = subprocess.run([busybox, "sh", "-n", str(SETCFG_DOUBLE)], capture_output=True)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------ property tests
_line = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda s, k, v: b"[%s]" % s if k is None else b"%s = %s" % (k, v),
              st.sampled_from([b"System", b"A", b" b ", b""]), st.one_of(st.none(), st.sampled_from([b"x", b"Key", b"k k"])),
              st.binary(max_size=10).filter(lambda b: b"\n" not in b and b"\r" not in b)),
)
_file = st.lists(_line, max_size=20).flatmap(
    lambda lines: st.sampled_from([b"\n", b"\r\n"]).map(lambda nl: nl.join(lines)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2000))
def test_reader_never_raises_on_arbitrary_bytes(data):
    doc = ConfigDocument(data)
    doc.get("System", "Web Access Port")
    doc.get("", "x")
    for entry in doc.entries:
        assert doc.find(entry.section, entry.key) is not None


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_file, st.sampled_from(["System", "A", "b", "New"]), st.sampled_from(["x", "Key", "k k", "Fresh"]),
       st.text(alphabet="abcXYZ019 ._-", min_size=1, max_size=12).map(str.strip).filter(bool))
def test_setcfg_round_trip_keeps_unrelated_bytes(data, section, key, value):
    doc = ConfigDocument(data)
    new = doc.with_value(section, key, value)
    after = ConfigDocument(new)
    assert after.get(section, key) == value
    # every other key keeps its value
    for entry in doc.entries:
        if (entry.section.lower(), entry.key.lower()) != (section.lower(), key.lower()):
            assert after.get(entry.section, entry.key) == doc.get(entry.section, entry.key)
    # unrelated bytes: the old bytes are a subsequence of lines of the new file
    old_lines = data.splitlines(keepends=True)
    changed = doc.find(section, key)
    kept = [line for i, line in enumerate(old_lines) if changed is None or i != changed.line_index]
    new_lines = new.splitlines(keepends=True)
    it = iter(new_lines)
    for line in kept:
        stripped = line.rstrip(b"\r\n")
        assert any(candidate.rstrip(b"\r\n") == stripped for candidate in it)
    # setting the same value again is a no-op
    assert after.with_value(section, key, value) == new
