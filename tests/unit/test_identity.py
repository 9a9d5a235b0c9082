"""Who the NAS is, read the way real QTS files have it: Version + Number, two copies of uLinux.conf,
the display model from platform.conf, and the autorun switch that older firmware does not have."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from exposure_guard.checks.runner import run_checks
from exposure_guard.context import CheckContext
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.identity import read_identity
from exposure_guard.qts.root import QtsRoot
from exposure_guard.render import firmware_label, model_label


def tree(root: Path, factory: Optional[str], runtime: str, platform: Optional[str] = None,
         extra: Optional[Dict[str, str]] = None) -> QtsRoot:
    (root / "etc/config").mkdir(parents=True)
    (root / "etc/config/uLinux.conf").write_text(runtime)
    if factory is not None:
        (root / "etc/default_config").mkdir(parents=True)
        (root / "etc/default_config/uLinux.conf").write_text(factory)
    if platform is not None:
        (root / "etc/platform.conf").write_text(platform)
    for rel, text in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return QtsRoot(root)


def identity(root: QtsRoot):
    return read_identity(root, QtsConfig(root))


def test_release_is_version_dot_number_with_build(tmp_path: Path):
    # the real layout: three-part Version, Number apart, "Key=Value" and trailing spaces, [END_FLAG] last
    factory = ("[System]\nModel = TS-X53B\nVersion = 5.0.1 \nNumber=2376\nBuild Number = 20230322\n"
               "[BTDownload]\nVersion = 1.0\n[END_FLAG]\n")
    ident = identity(tree(tmp_path, factory, factory))
    assert (ident.firmware, ident.build, ident.firmware_source) == ("5.0.1.2376", "20230322", "/etc/default_config/uLinux.conf")
    assert ident.firmware_note == ""
    assert ident.to_dict()["firmware"] == "5.0.1.2376"


def test_factory_copy_wins_and_a_disagreement_is_said(tmp_path: Path):
    factory = "[System]\nVersion = 5.1.4\nNumber = 2596\nBuild Number = 20231128\n"
    runtime = "[System]\nVersion = 5.0.1\nNumber = 2376\nBuild Number = 20230322\n"
    ident = identity(tree(tmp_path, factory, runtime))
    assert ident.firmware == "5.1.4.2596" and ident.build == "20231128"
    assert "5.0.1.2376" in ident.firmware_note and "authoritative" in ident.firmware_note
    # without the factory copy, the runtime one is used
    other = identity(tree(tmp_path / "b", None, runtime))
    assert other.firmware == "5.0.1.2376" and other.firmware_source == "/etc/config/uLinux.conf"


def test_missing_number_keeps_three_parts_and_a_four_part_version_is_taken_as_is(tmp_path: Path):
    assert identity(tree(tmp_path, "[System]\nVersion = 4.3.6\n", "")).firmware == "4.3.6"
    assert identity(tree(tmp_path / "b", "[System]\nVersion = 4.3.6.0959\n", "")).firmware == "4.3.6.0959"
    assert identity(tree(tmp_path / "c", "", "")).firmware == "unknown"


def test_display_model_from_platform_conf_else_the_family_labelled(tmp_path: Path):
    runtime = "[System]\nModel = TS-X53B\nVersion = 5.0.1\nNumber = 2376\nBuild Number = 20230322\n"
    named = identity(tree(tmp_path, None, runtime, "[System]\nDISPLAY_NAME = TS-453Be\n"))
    assert (named.model, named.model_family) == ("TS-453Be", "TS-X53B")
    assert model_label(named.to_dict()) == "TS-453Be"
    family = identity(tree(tmp_path / "b", None, runtime, "[CONFIG STORAGE]\nFS_TYPE = ext2\n"))
    assert family.model == "TS-X53B" and model_label(family.to_dict()) == "TS-X53B (model family)"
    old = identity(tree(tmp_path / "c", None, runtime.replace("TS-X53B", "TS-459")))  # old boxes: the real name
    assert model_label(old.to_dict()) == "TS-459"
    assert firmware_label(named.to_dict()) == "QTS 5.0.1.2376 build 20230322"
    assert firmware_label({"firmware": "h5.1.0.2424", "build": "20230519"}) == "QuTS hero h5.1.0.2424 build 20230519"


def autorun(root: QtsRoot):
    report, _ = run_checks(CheckContext(root, offline=True), ["system.autorun"])
    return report.findings[0]


def test_autorun_below_430_has_no_switch(tmp_path: Path):
    old = "[System]\nVersion = 4.2.6\nNumber = 0999\nBuild Number = 20180615\n"
    with_script = autorun(tree(tmp_path, old, old, extra={"tmp/config/autorun.sh": "#!/bin/sh\n"}))
    assert with_script.status == "fail" and "no autorun switch" in with_script.summary
    unmounted = autorun(tree(tmp_path / "b", old, old))
    assert unmounted.status == "unknown"  # never a pass: the script may be there, unseen
    new = "[System]\nVersion = 4.3.6\nNumber = 1446\nBuild Number = 20200929\n"
    assert autorun(tree(tmp_path / "c", new, new)).status == "pass"  # the switch exists and is off
    on = new + "[Misc]\nAutorun = TRUE\n"
    assert autorun(tree(tmp_path / "d", new, on)).status == "fail"
    assert autorun(tree(tmp_path / "e", "", "[Misc]\nAutorun = FALSE\n")).status == "pass"  # explicitly off
    assert autorun(tree(tmp_path / "f", "", "")).status == "unknown"  # firmware unknown, switch absent
