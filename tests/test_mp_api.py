"""Materials Project source through the real mp-api client against a local HTTP server.

The server speaks the API's JSON shape for the two routes the client uses: ``GET /heartbeat``
(read at client construction) and ``GET /materials/summary/`` (``materials.summary.search``) with
``*_min``/``*_max``, ``exclude_elements``, ``theoretical``, ``_fields``, ``_limit``/``_skip`` params,
answering ``{"data": [...], "meta": {"total_doc": N}}``. It counts requests so the retry tests prove
that requests are really repeated.
"""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from pymatgen.core import Lattice, Structure

from fourdcrystal.crystals import materials_project as mp
from fourdcrystal.errors import UserError

KEY = "a" * 32  # the client insists on 32-character keys


def _doc(mid, structure, ehull, theoretical=False, sg=("Fm-3m", 225)):
    return {"material_id": mid, "formula_pretty": structure.composition.reduced_formula,
            "structure": structure.as_dict(), "symmetry": {"symbol": sg[0], "number": sg[1], "crystal_system": "Cubic"},
            "energy_above_hull": ehull, "nsites": len(structure), "nelements": len(structure.composition.elements),
            "elements": sorted(str(e) for e in structure.composition.elements), "theoretical": theoretical}


DOCS = [
    _doc("mp-149", Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]), 0.0, sg=("Fd-3m", 227)),
    _doc("mp-22862", Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), 0.0),
    _doc("mp-22865", Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.21), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), 0.01, sg=("Pm-3m", 221)),
    _doc("mp-999001", Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.05), ["Al"], [[0, 0, 0]]), 0.30),  # above hull
    _doc("mp-999002", Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.0), ["He"], [[0, 0, 0]]), 0.0),  # excluded
    _doc("mp-999003", Structure.from_spacegroup("Im-3m", Lattice.cubic(2.87), ["Fe"], [[0, 0, 0]]), 0.0, theoretical=True),
]


class FakeMP:
    """Serve DOCS; ``script`` is a list of status codes returned by successive summary requests before 200s."""

    def __init__(self, script=(), forever=None):
        self.script = list(script)
        self.forever = forever
        self.summary_requests = 0
        self.heartbeats = 0
        self.params = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/heartbeat":
                    fake.heartbeats += 1
                    return self._send(200, {"db_version": "2026.11.01", "access_controlled_batch_ids": [],
                                            "version": "0.90.0"})
                if url.path.rstrip("/") != "/materials/summary":
                    return self._send(404, {"detail": "Not Found"})
                fake.summary_requests += 1
                fake.params.append(q)
                if self.headers.get("x-api-key") != KEY:
                    return self._send(401, {"detail": "bad key"})
                if fake.script:
                    return self._send(fake.script.pop(0), {"detail": "try later"})
                if fake.forever:
                    return self._send(fake.forever, {"detail": "server error"})
                self._send(200, fake.answer(q))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def answer(self, q):
        def rng(doc_key, name):
            lo, hi = float(q.get(f"{name}_min", "-inf")), float(q.get(f"{name}_max", "inf"))
            return lambda d: lo <= d[doc_key] <= hi
        checks = [rng("energy_above_hull", "energy_above_hull"), rng("nsites", "nsites"), rng("nelements", "nelements")]
        excl = set(filter(None, q.get("exclude_elements", "").split(",")))
        docs = [d for d in DOCS if all(c(d) for c in checks) and not excl & set(d["elements"])]
        if "theoretical" in q:
            want = q["theoretical"].lower() == "true"
            docs = [d for d in docs if d["theoretical"] == want]
        if q.get("_sort_fields") == "material_id":
            docs = sorted(docs, key=lambda d: d["material_id"])
        skip, limit = int(q.get("_skip", 0)), int(q.get("_limit", 1000))
        fields = q.get("_fields", "").split(",") if q.get("_fields") else None
        page = [{k: d[k] for k in fields} if fields else d for d in docs[skip: skip + limit]]
        return {"data": page, "meta": {"total_doc": len(docs), "max_limit": 1000, "time_stamp": "2026-11-24"}}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _cfg(endpoint, **kw):
    cfg = {"api_key": KEY, "endpoint": endpoint, "energy_above_hull_max_eV": 0.05, "max_sites": 40,
           "max_elements": 4, "exclude_elements": ["He", "Ne"], "include_theoretical": False, "max_count": 100,
           "max_retries": 3, "backoff_s": 0.001}
    cfg.update(kw)
    return cfg


def test_query_filters_cache_and_table(tmp_path):
    with FakeMP() as srv:
        entries = mp.fetch(_cfg(srv.endpoint), tmp_path)
        assert srv.summary_requests == 1
    assert [e["material_id"] for e in entries] == ["mp-149", "mp-22862", "mp-22865"]
    sent = srv.params[0]
    assert sent["energy_above_hull_max"] == "0.05" and sent["nsites_max"] == "40" and sent["nelements_max"] == "4"
    assert set(sent["exclude_elements"].split(",")) == {"He", "Ne"}
    assert set(sent["_fields"].split(",")) == set(mp.FIELDS)
    assert entries[0]["spacegroup_number"] == 227 and entries[0]["formula"] == "Si"
    cached = list(tmp_path.glob("*.json.gz"))
    assert len(cached) == 1 and not list(tmp_path.glob(".*tmp*"))
    # Server gone: the rerun is served from the cache, no request, no key needed.
    again = mp.fetch(_cfg(srv.endpoint, api_key=None), tmp_path)
    assert again == entries
    table = mp.mp_structures(_cfg(srv.endpoint), tmp_path)
    assert list(table.structure_id) == ["mp-149", "mp-22862", "mp-22865"]
    assert list(table.spacegroup_number) == [227, 225, 221] and list(table.n_sites) == [8, 8, 2]


def test_max_count_and_theoretical_paginate(tmp_path):
    with FakeMP() as srv:
        entries = mp.fetch(_cfg(srv.endpoint, include_theoretical=True, max_count=2), tmp_path)
    assert [e["material_id"] for e in entries] == ["mp-149", "mp-22862"]
    assert "theoretical" not in srv.params[0]
    with FakeMP() as srv:
        entries = mp.fetch(_cfg(srv.endpoint, include_theoretical=True, max_count=3, energy_above_hull_max_eV=0.0),
                           tmp_path / "b")
    assert {e["material_id"] for e in entries} == {"mp-149", "mp-22862", "mp-999003"}


@pytest.mark.parametrize("code", [429, 503])
def test_transient_error_is_retried_then_succeeds(tmp_path, code, caplog):
    with FakeMP(script=[code]) as srv:
        entries = mp.fetch(_cfg(srv.endpoint), tmp_path)
    assert srv.summary_requests == 2  # exactly one failed request, then one that succeeded
    assert len(entries) == 3
    assert "retrying" in caplog.text


def test_500_forever_gives_clean_error_after_retries(tmp_path):
    with FakeMP(forever=500) as srv:
        with pytest.raises(UserError, match=r"unreachable after 3 attempts.*builtin") as err:
            mp.fetch(_cfg(srv.endpoint, max_retries=2), tmp_path)
    assert srv.summary_requests == 3
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("*"))  # nothing cached from a failed query


def test_server_down_gives_clean_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="unreachable after 2 attempts"):
        mp.fetch(_cfg(f"http://127.0.0.1:{port}/", max_retries=1), tmp_path)


def test_missing_key_explains_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(UserError, match=r"MP_API_KEY.*source.kind: builtin"):
        mp.fetch(_cfg("http://127.0.0.1:9/", api_key=None), tmp_path)


def test_rejected_key_is_a_clean_error(tmp_path):
    with FakeMP() as srv:
        with pytest.raises(UserError, match="query failed.*401"):
            mp.fetch(_cfg(srv.endpoint, api_key="b" * 32), tmp_path)
    assert srv.summary_requests == 1  # a 401 is not retried
