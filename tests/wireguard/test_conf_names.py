"""A downloaded `.conf` works as downloaded, under the name it was downloaded with (issue 12, section 3).

wg-quick takes the interface name from the file name and accepts only `[a-zA-Z0-9_=+.-]{1,15}`. Every name
the router form accepts, with every configuration id the database can hand out, must give such a name; wg-quick
itself checks a few of the longest (as root; the end-to-end `wg-quick up` is in
tests/system/test_conf_names_lab.py).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from portal.wireguard.render import download_filename, interface_name, render_conf
from portal.wireguard.service import ROUTER_NAME, validate_router_name
from tests.wireguard.test_render import PEER

# wg-quick's own test (wireguard-tools src/wg-quick/linux.bash: parse_options), and the kernel's: not . or ..
WG_QUICK_FILE = re.compile(r"/?([a-zA-Z0-9_=+.-]{1,15})\.conf")
ALLOWED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ._-"
# Ids up to the largest SQLite hands out (PostgreSQL's integer stops at 2**31 - 1).
IDS = (1, 7, 9, 10, 99, 12345, 10**9, 2**31 - 1, 10**11 - 1, 10**11, 10**12 - 1, 10**12, 10**13, 2**63 - 1)


def acceptable_names() -> list[str]:
    """Names the router form accepts (ROUTER_NAME after stripping): the longest, each allowed character, the
    odd ones (nothing but punctuation after the first character, digits only), and a seeded random sample."""
    names = ["a", "7", "A" * 64, "9" * 64, "x" + " " * 62 + "y", "x" + "." * 63, "x" + "-" * 63, "x" + "_" * 63,
             "Branch office 7", "branch-office-7", "Core Router 1", "0.0.0.0", "ALL CAPS ROUTER NAME " * 3,
             (ALLOWED.replace(" ", "") * 2)[:64], "a" + ALLOWED[-4:] * 15 + "zzz"]
    rng = random.Random(15)
    for _ in range(500):
        names.append(rng.choice(ALLOWED[:62]) + "".join(rng.choices(ALLOWED, k=rng.randint(0, 63))))
    accepted = [name for name in names if ROUTER_NAME.fullmatch(name.strip())]
    assert len(accepted) > 400 and all(validate_router_name(name) for name in accepted)
    return accepted


def assert_valid_interface_file(filename: str) -> None:
    assert WG_QUICK_FILE.fullmatch(filename), filename
    interface = filename.removesuffix(".conf")
    assert interface not in (".", "..") and len(interface.encode()) <= 15, filename


def test_every_acceptable_name_and_id_gives_a_file_wg_quick_accepts() -> None:
    for name in acceptable_names():
        names = set()
        for configuration_id in IDS:
            filename = download_filename(name, configuration_id, "conf")
            assert_valid_interface_file(filename)
            assert filename == f"{interface_name(name, configuration_id)}.conf"
            names.add(filename)
        assert len(names) == len(IDS)  # each configuration of a router has a name of its own


@pytest.mark.parametrize(("name", "configuration_id", "expected"), [
    ("Branch office 7", 19, "wg-branch-of-19.conf"),
    ("branch", 19, "wg-branch-19.conf"),
    ("Core Router 1", 42, "wg-core-rout-42.conf"),
    ("a" * 64, 2**31 - 1, "wg-a-2147483647.conf"),  # PostgreSQL's largest id still keeps a letter of the name
    ("x--y", 5, "wg-x-y-5.conf"),
    ("x" + "." * 63, 5, "wg-x-5.conf"),
    ("core router", 10**10, "wg-10000000000.conf"),  # no room for the name: the id alone
    ("core router", 10**12, "wgcre66i9s.conf"),  # an id too long even for that, in base 36
    ("ÄÖÜ", 3, "wg-3.conf"),  # not a name the form accepts, but the downloads must not break on old rows
])
def test_conf_names_hint_at_the_router_and_keep_the_id(name: str, configuration_id: int, expected: str) -> None:
    assert download_filename(name, configuration_id, "conf") == expected


def test_the_rsc_name_stays_long_and_descriptive() -> None:
    assert download_filename("Branch office 7", 19, "rsc") == "branch-office-7-cfg19.rsc"


def test_names_of_different_configurations_never_collide() -> None:
    """Within one name, ids set files apart; across names the id does too (it ends every name)."""
    seen: dict[str, tuple[str, int]] = {}
    for name in ("a", "a" * 64, "ab", "a b", "a-b", "wg"):
        for configuration_id in [*range(1, 2000), *IDS]:
            filename = download_filename(name, configuration_id, "conf")
            previous = seen.setdefault(filename, (name, configuration_id))
            assert previous[1] == configuration_id, (filename, previous, name, configuration_id)


@pytest.mark.skipif(not shutil.which("wg-quick"), reason="wireguard-tools (wg-quick) not on PATH")
@pytest.mark.skipif(os.geteuid() != 0, reason="wg-quick re-executes itself through sudo unless run as root")
@pytest.mark.parametrize("name", ["A" * 64, "x" + "." * 63, "Branch office 7", "0.0.0.0", "x_y z-9"])
@pytest.mark.parametrize("configuration_id", [1, 2**31 - 1, 2**63 - 1])
def test_wg_quick_strip_accepts_the_downloaded_file_name(tmp_path: Path, name: str, configuration_id: int) -> None:
    """`wg-quick strip ./FILE` checks the interface name before anything else (run in the file's folder, as a
    person would after downloading it)."""
    filename = download_filename(name, configuration_id, "conf")
    path = tmp_path / filename
    path.write_text(render_conf(replace(PEER, router_name=name, configuration_id=configuration_id)))
    path.chmod(0o600)
    result = subprocess.run(["wg-quick", "strip", f"./{filename}"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "PrivateKey = " in result.stdout


@pytest.mark.skipif(not shutil.which("wg-quick"), reason="wireguard-tools (wg-quick) not on PATH")
@pytest.mark.skipif(os.geteuid() != 0, reason="wg-quick re-executes itself through sudo unless run as root")
def test_wg_quick_refuses_the_old_names(tmp_path: Path) -> None:
    """What the issue saw, so the test above means something: the old name is refused."""
    path = tmp_path / "branch-office-7-cfg12.conf"
    path.write_text(render_conf(PEER))
    path.chmod(0o600)
    result = subprocess.run(["wg-quick", "strip", f"./{path.name}"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "valid interface name" in result.stderr
