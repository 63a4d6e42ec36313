"""Eager pepper rotation: a new pepper, every identifier re-keyed to it from the member's encrypted
personal data (no member needs to come back), the old pepper retired (its file destroyed), and
every member still logs in by each of their identifiers."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.errors import Conflict
from gateway.models import MemberIdentifier
from gateway.runtime import load_peppers
from gateway.services import peppers

from harness import enrol, login, restart, start_local_brand

IDENTIFIERS = [{"phone": f"+86 139 0000 {i:04d}", "email": f"member{i}@example.com"} for i in range(5)]


def _versions(brand) -> set[int]:
    with brand.gw.sessions() as session:
        return {int(p.split(".")[0][1:]) for p in session.scalars(select(MemberIdentifier.pseudonym))}


def test_rotate_rekey_retire_and_everyone_still_logs_in(tmp_path):
    brand = start_local_brand(tmp_path, "peppered")
    try:
        for ids in IDENTIFIERS:
            enrol(brand, "unused", identifiers=ids)
        assert _versions(brand) == {1}
        assert peppers.rotate(brand.gw, "test") == 2
        login(brand, "email", IDENTIFIERS[0]["email"])  # a member who comes back is re-keyed at once
        with pytest.raises(Conflict, match="still keyed"):
            peppers.retire(brand.gw, 1, "test")
        with pytest.raises(Conflict, match="current"):
            peppers.retire(brand.gw, 2, "test")
        done = peppers.rekey(brand.gw)
        assert (done.rekeyed, done.left) == (2 * len(IDENTIFIERS) - 1, 0)
        assert _versions(brand) == {2}
        peppers.retire(brand.gw, 1, "test")
        assert not (brand.gw.settings.keys_dir / "pepper.key").exists() and set(load_peppers(brand.gw.settings.keys_dir)) == {2}
        brand = restart(brand)  # a new process knows only pepper v2
        assert brand.gw.pseudonymiser.versions == (2,)
        for ids in IDENTIFIERS:
            for kind, value in ids.items():
                assert login(brand, kind, value)["Authorization"], (kind, value)
        assert brand.client.post("/v1/sessions", json={"kind": "email", "value": "nobody@example.com",
                                                        "passphrase": "correct horse battery"}).status_code == 401
    finally:
        brand.close()


def test_an_enrolment_in_progress_holds_the_old_pepper_back(tmp_path):
    brand = start_local_brand(tmp_path, "pending")
    try:
        r = brand.client.post("/v1/enrolments", json={"identifiers": {"email": "late@example.com"}, "name": "Late Comer",
                                                       "passphrase": "correct horse battery"})
        assert r.status_code == 202
        peppers.rotate(brand.gw, "test")
        peppers.rekey(brand.gw)
        with pytest.raises(Conflict, match="enrolment in progress"):
            peppers.retire(brand.gw, 1, "test")
    finally:
        brand.close()
