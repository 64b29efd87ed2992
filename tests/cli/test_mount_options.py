"""The `-o` option table: every bad value is a usage error (exit 2), defaults match
the daemon's MountConfig, and `--help` lists every row."""
from __future__ import annotations

import dataclasses

import pytest

from fdsl.commands import mount_options
from fdsl.errors import UsageError
from fdsl.runtime.daemon import MountConfig
from mounting import fdsl


def test_table_defaults_are_the_daemon_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(MountConfig)
              if f.default is not dataclasses.MISSING}
    for dest, value in mount_options.defaults().items():
        assert dest in fields, f"-o row sets {dest}, which MountConfig lacks"
        assert fields[dest] == value, f"{dest}: table says {value!r}, MountConfig {fields[dest]!r}"


def test_values_are_converted_and_fuse_options_kept_in_order():
    parsed = mount_options.parse(["threads=4,inline=0", "allow_other,backend=interp",
                                  "no_identity,x-systemd.automount,defaults,fsname=view,ro"])
    s = parsed.settings
    assert (s["threads"], s["inline"], s["backend"], s["switch_identity"]) == (4, False, "interp",
                                                                               False)
    assert parsed.fuse == ["allow_other", "fsname=view", "ro"]


@pytest.mark.parametrize("option, words", [
    ("threads=abc", "integer"), ("threads=0", "1..1024"), ("entry_timeout=-1", "0..86400"),
    ("entry_timeout=nan", "0..86400"), ("backend=fast", "auto, jit, interp"),
    ("inline=maybe", "0 or 1"), ("no_identity=1", "takes no value"), ("policy=", "needs a value"),
    ("threads", "needs a value"), ("allow_othr", "did you mean 'allow_other'"),
    ("max_read=1", "4096"),
])
def test_bad_values_name_the_option(option, words):
    with pytest.raises(UsageError) as err:
        mount_options.parse([option])
    assert words in str(err.value) and option.partition("=")[0] in str(err.value)


@pytest.mark.parametrize("option", ["threads=x", "bogus", "inline=2", "attr_timeout="])
def test_bad_values_exit_2_before_touching_anything(option, tmp_path):
    proc = fdsl("mount", "-o", option, "", tmp_path, tmp_path / "missing")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fdsl: ") and "Traceback" not in proc.stderr


def test_help_lists_every_option():
    text = fdsl("mount", "--help", check=True).stdout
    for opt in mount_options.OPTIONS:
        assert opt.name in text, opt.name


def test_policy_given_twice_is_a_usage_error(tmp_path):
    proc = fdsl("mount", "-o", "policy=a.fdsl", "b.fdsl", tmp_path, tmp_path)
    assert proc.returncode == 2 and "twice" in proc.stderr
