"""Bad input: over a thousand mutated and truncated DICOM files sent to ``hypoxnode serve``.

The mutations start from the synthetic study's files: truncation at random offsets, flipped
bytes, dropped or garbled elements, bad VRs, absurd lengths, missing or invalid UIDs, a SOP
class that does not match the request or the content, absurd image sizes. The raw bytes go over
real associations (pynetdicom sends the file's data set unparsed). Afterwards the node answers
C-ECHO, nothing outside ``data_dir`` was written, every fuzz study stored is settled (done, or
failed with a reason), and a valid study sent afterwards is processed with all its instances.
Studies a person could send by mistake (PET without CT, CT only) fail with a reason.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
)

from service.synthetic import make_study, write_study
from tests.peers import NodeProcess, echoscu, storescu, wait_for
from tests.reliability import http_json, no_delay, snapshot, start_test_node

FUZZ_FILES = 1100
FUZZ_STUDIES = 8
BATCH = 60
SETTLED = {"done", "failed"}


class Mutator:
    """Makes mutated Part 10 files from a few template datasets, reproducibly."""

    def __init__(self, templates: list[Dataset], seed: int) -> None:
        self.templates = templates
        self.rng = random.Random(seed)
        self.kinds: list[tuple[str, Callable[[Dataset], bytes]]] = [
            ("truncate", self.truncate),
            ("flip_bytes", self.flip_bytes),
            ("drop_elements", self.drop_elements),
            ("drop_uid", self.drop_uid),
            ("garble_value", self.garble_value),
            ("bad_vr", self.bad_vr),
            ("absurd_length", self.absurd_length),
            ("invalid_uid", self.invalid_uid),
            ("sop_class_mismatch", self.sop_class_mismatch),
            ("content_not_sop_class", self.content_not_sop_class),
            ("absurd_size", self.absurd_size),
            ("wrong_transfer_syntax", self.wrong_transfer_syntax),
        ]

    def make(self, study_uid: str) -> tuple[str, bytes]:
        """One mutated file of study ``study_uid``: (kind, Part 10 bytes)."""
        while True:
            ds = copy.deepcopy(self.rng.choice(self.templates))
            ds.StudyInstanceUID = study_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            kind, mutate = self.rng.choice(self.kinds)
            try:
                return kind, mutate(ds)
            except (AttributeError, ValueError, TypeError, KeyError):
                continue  # pydicom refused to encode this one (e.g. PixelData VR unknowable)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def encode(ds: Dataset) -> bytes:
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    def split(self, ds: Dataset) -> tuple[bytes, bytearray]:
        """Encoded file meta (with preamble) and data set."""
        data = self.encode(ds)
        meta_end = _meta_end(data)
        return data[:meta_end], bytearray(data[meta_end:])

    def element_headers(self, body: bytes) -> list[tuple[int, bool]]:
        """(offset, long form) of top-level explicit-VR element headers in ``body``."""
        found = []
        offset = 0
        while offset + 8 <= len(body):
            vr = body[offset + 4 : offset + 6]
            long_form = vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC",
                               b"UR", b"OV")
            if long_form:
                length = int.from_bytes(body[offset + 8 : offset + 12], "little")
                header = 12
            else:
                length = int.from_bytes(body[offset + 6 : offset + 8], "little")
                header = 8
            found.append((offset, long_form))
            if length == 0xFFFFFFFF:
                break  # undefined length sequence: stop at it
            offset += header + length
        return found

    # -- mutations -------------------------------------------------------------------------

    def truncate(self, ds: Dataset) -> bytes:
        meta, body = self.split(ds)
        return meta + bytes(body[: self.rng.randrange(0, len(body))])

    def flip_bytes(self, ds: Dataset) -> bytes:
        meta, body = self.split(ds)
        head = min(len(body), 2048)  # mostly the header: pixels tolerate any byte
        for _ in range(self.rng.randint(1, 24)):
            body[self.rng.randrange(head)] = self.rng.randrange(256)
        return meta + bytes(body)

    def drop_elements(self, ds: Dataset) -> bytes:
        keywords = [e.keyword for e in ds if e.keyword and e.keyword != "PixelData"]
        for keyword in self.rng.sample(keywords, k=min(len(keywords), self.rng.randint(1, 12))):
            delattr(ds, keyword)
        return self.encode(ds)

    def drop_uid(self, ds: Dataset) -> bytes:
        for keyword in self.rng.sample(
            ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
             "FrameOfReferenceUID"], k=self.rng.randint(1, 2),
        ):
            if keyword in ds:
                delattr(ds, keyword)
        return self.encode(ds)

    def garble_value(self, ds: Dataset) -> bytes:
        meta, body = self.split(ds)
        headers = self.element_headers(bytes(body))
        offset, long_form = self.rng.choice(headers)
        start = offset + (12 if long_form else 8)
        for i in range(start, min(len(body), start + self.rng.randint(1, 64))):
            body[i] = self.rng.randrange(256)
        return meta + bytes(body)

    def bad_vr(self, ds: Dataset) -> bytes:
        meta, body = self.split(ds)
        headers = self.element_headers(bytes(body))
        for offset, _ in self.rng.sample(headers, k=min(3, len(headers))):
            body[offset + 4 : offset + 6] = self.rng.choice([b"ZZ", b"\x00\x00", b"SQ", b"OB",
                                                            b"UN", b"??", b"US"])
        return meta + bytes(body)

    def absurd_length(self, ds: Dataset) -> bytes:
        meta, body = self.split(ds)
        offset, long_form = self.rng.choice(self.element_headers(bytes(body)))
        if long_form:
            value = self.rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000000])
            body[offset + 8 : offset + 12] = value.to_bytes(4, "little")
        else:
            body[offset + 6 : offset + 8] = self.rng.choice([0xFFFF, 0xFFFE]).to_bytes(2, "little")
        return meta + bytes(body)

    def invalid_uid(self, ds: Dataset) -> bytes:
        keyword = self.rng.choice(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
        value = self.rng.choice(["../../x", "1.2.abc", "01.02.3", "1..2", "", "1." + "9" * 70,
                                 "/tmp/evil", "..\\..\\x", "1.2.3 ", "\u00e9.1"])
        clean_meta, _ = self.split(ds)
        ds[keyword].value = value
        meta, body = self.split(ds)
        if keyword == "SOPInstanceUID" and (not value or "\\" in value):
            meta = clean_meta  # the request's Affected SOP Instance UID must be sendable
        return meta + bytes(body)

    def sop_class_mismatch(self, ds: Dataset) -> bytes:
        _, body = self.split(ds)
        claimed = copy.deepcopy(ds)
        claimed.SOPClassUID = MRImageStorage  # the file meta, so the request, says MR
        meta, _ = self.split(claimed)
        return meta + bytes(body)

    def content_not_sop_class(self, ds: Dataset) -> bytes:
        other = CTImageStorage if ds.Modality == "PT" else PositronEmissionTomographyImageStorage
        ds.SOPClassUID = other
        ds.file_meta.MediaStorageSOPClassUID = other
        return self.encode(ds)

    def absurd_size(self, ds: Dataset) -> bytes:
        ds.Rows = self.rng.choice([0, 1, 65535])
        ds.Columns = self.rng.choice([0, 3, 65535])
        if self.rng.random() < 0.5:
            ds.NumberOfFrames = self.rng.choice([0, 100000])
        return self.encode(ds)

    def wrong_transfer_syntax(self, ds: Dataset) -> bytes:
        meta, body = self.split(ds)
        fake = copy.deepcopy(ds)
        fake.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # the body is explicit VR
        fake_meta, _ = self.split(fake)
        return fake_meta + bytes(body)


def _meta_end(data: bytes) -> int:
    """Byte offset where the data set starts, after the preamble and the group 0002."""
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL at 132+8
    return 144 + group_length


@pytest.fixture(scope="module")
def templates() -> list[Dataset]:
    study = make_study(field_of_view="pelvis", seed=7)
    chosen = study.pet[::12] + study.ct[::18]
    for ds in chosen:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return chosen


def _send_raw(port: int, files: list[Path]) -> list[int | None]:
    """C-STORE each file's raw data set; a status per file (None: association aborted)."""
    statuses: list[int | None] = []
    pending = list(files)
    while pending:
        ae = AE(ae_title="FUZZER")
        for sop_class in (CTImageStorage, MRImageStorage, PositronEmissionTomographyImageStorage):
            for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                ae.add_requested_context(sop_class, [syntax])
        assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE",
                             evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
        assert assoc.is_established, "the node refused an association during the fuzzing"
        try:
            while pending and assoc.is_established:
                status = assoc.send_c_store(pending.pop(0))
                statuses.append(int(status.Status) if "Status" in status else None)
        finally:
            if assoc.is_established:
                assoc.release()
    return statuses


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_thousand_bad_files_then_a_good_study(
    tmp_path: Path, templates: list[Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our SCU must send the bytes as they are: no parsing, no UID validation on this side.
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    monkeypatch.setitem(pynetdicom_config.VALIDATORS, "UI", lambda _value: (True, ""))
    fuzz_dir = tmp_path / "fuzz"
    fuzz_dir.mkdir()
    mutator = Mutator(templates, seed=20240305)
    study_uids = [generate_uid() for _ in range(FUZZ_STUDIES)]
    files: list[Path] = []
    kinds: Counter[str] = Counter()
    for number in range(FUZZ_FILES):
        kind, data = mutator.make(study_uids[number % FUZZ_STUDIES])
        kinds[kind] += 1
        path = fuzz_dir / f"{number:05d}-{kind}.dcm"
        path.write_bytes(data)
        files.append(path)
    good = make_study(field_of_view="pelvis", seed=99, patient_id="AFTERFUZZ")
    good_files = write_study(good, tmp_path / "good")
    good_uid = str(good.pet[0].StudyInstanceUID)

    workdir = tmp_path / "node"
    node = start_test_node(workdir, stable_seconds=1.0)
    before = snapshot(tmp_path, exclude=workdir)
    started = time.monotonic()
    try:
        statuses: list[int | None] = []
        for first in range(0, len(files), BATCH):
            statuses += _send_raw(node.port, files[first : first + BATCH])
        fuzz_seconds = time.monotonic() - started
        assert node.process.poll() is None, "the node died during the fuzzing"
        assert echoscu(node.port, node.ae_title)

        sent = storescu(good_files, node.port, node.ae_title)
        assert sent.returncode == 0, sent.stderr
        assert node.http_port is not None
        port = node.http_port

        def good_done() -> bool:
            info = http_json(port, f"/api/studies/{good_uid}")
            assert info["state"] != "failed", info["error"]
            return bool(info["state"] == "done")

        wait_for(good_done, 120, "the valid study sent after the fuzzing to be processed")
        good_info = http_json(port, f"/api/studies/{good_uid}")

        def all_settled() -> bool:
            return all(s["state"] in SETTLED for s in http_json(port, "/api/studies"))

        wait_for(all_settled, 120, "every fuzz study to be done or failed")
        studies = http_json(port, "/api/studies")
        assert echoscu(node.port, node.ae_title)
    finally:
        exit_code = node.stop()
    assert exit_code == 0, node.log()[-3000:]

    outcome = Counter("abort" if s is None else f"0x{s:04X}" for s in statuses)
    print(f"\nfuzz: {len(files)} files in {fuzz_seconds:.1f} s; kinds {dict(kinds)}; "
          f"statuses {dict(outcome)}; studies {Counter(s['state'] for s in studies)}")
    assert len(statuses) == len(files) >= 1000
    assert outcome["0x0000"] > 0 and outcome["0xC210"] > 0 and outcome["0xA900"] > 0
    assert snapshot(tmp_path, exclude=workdir) == before, "something written outside data_dir"
    for path in node.data_dir.rglob("*"):
        assert path.resolve().is_relative_to(node.data_dir.resolve())
    assert good_info["generation"] == 1
    assert good_info["processed_count"] == len(good_files)
    assert sum(s["instances"] for s in studies if s["study_instance_uid"] == good_uid) == len(
        good_files
    )
    for study in studies:
        if study["state"] == "failed":
            assert study["error"], f"study {study['study_instance_uid']} failed without reason"


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("pet_only", "no CT in the study"),
        ("ct_only", "no PET series"),
    ],
)
def test_unprocessable_study_fails_with_a_reason(tmp_path: Path, which: str, reason: str
                                                 ) -> None:
    study = make_study(field_of_view="pelvis", seed=3, patient_id=which.upper())
    files = write_study(study, tmp_path / "scanner")
    files = [f for f in files if (f.parent.name == "pet") == (which == "pet_only")]
    study_uid = str(study.pet[0].StudyInstanceUID)
    node: NodeProcess = start_test_node(tmp_path / "node")
    try:
        assert storescu(files, node.port, node.ae_title).returncode == 0
        assert node.http_port is not None
        port = node.http_port
        wait_for(lambda: http_json(port, f"/api/studies/{study_uid}")["state"] in SETTLED, 60,
                 f"the {which} study to be settled")
        info = http_json(port, f"/api/studies/{study_uid}")
    finally:
        assert node.stop() == 0
    assert info["state"] == "failed"
    assert reason in info["error"]
