"""Routing rules: evaluation, configuration errors, and mixed studies through a real node.

End to end: DCMTK storescu sends three studies in one association (a 64Cu-ATSM PET/CT, an FDG
staging PET/CT, a small MR) to ``hypoxnode serve``; a real Orthanc is the destination. The
Cu-ATSM study is processed with its rule's profile (its thresholds in the result) and its
originals are forwarded; the FDG study is never processed and is purged; the MR is forwarded
and purged. Forwarded data sets are byte-identical at Orthanc; the status page names the rule
of each study and why; ``hypoxnode route-test`` on the same folder says the same.
"""

from __future__ import annotations

import html
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from service.cli.main import main
from service.config import ConfigError, load_config
from service.routing.rules import SeriesHeaders, StudyHeaders, evaluate, profile_config
from service.synthetic import make_study, write_study
from tests.peers import Orthanc, start_orthanc, storescu, wait_for
from tests.reliability import http_json, start_test_node

ROUTING = """
[[destinations]]
name = "ARCHIVE"
ae_title = "{ae}"
host = "127.0.0.1"
port = {port}

[routing.profiles.atsm]
hypoxic_thresholds = [1.4]
destinations = ["ARCHIVE"]

[[routing.rules]]
name = "cu-atsm"
modality = "PT"
tracer = "*ATSM*"
profile = "atsm"
forward_to = ["ARCHIVE"]

[[routing.rules]]
name = "fdg-staging"
tracer = "re:.*(FDG|fludeoxyglucose).*"
action = "ignore"

[[routing.rules]]
name = "mr-forward"
calling_ae_title = "SCANNER"
modality = "MR"
station_name = "MRI?"
action = "forward"
forward_to = ["ARCHIVE"]

[routing.default]
action = "ignore"
"""


def _mr_study(directory: Path) -> list[Path]:
    """A hand-made two-slice MR study (8 x 8 pixels, explicit VR little endian)."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    paths = []
    for number in (1, 2):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality, ds.StationName, ds.SeriesDescription = "MR", "MRI1", "T2 axial"
        ds.PatientID, ds.PatientName = "ROUTE-MR", "Routing^MR"
        ds.StudyDate, ds.StudyTime = "20240301", "101010"
        ds.InstanceNumber = number
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = (np.arange(64, dtype=np.uint16) * number).tobytes()
        path = directory / f"mr{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _data_set_bytes(data: bytes) -> bytes:
    """The data set of a Part 10 file, after its file meta information."""
    meta_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL value
    return data[144 + meta_length:]


def _headers(**series: str) -> StudyHeaders:
    tracer = series.pop("tracer", "")
    return StudyHeaders("1.2.3", ("SCANNER",), ("HYPOXNODE",),
                        (SeriesHeaders("1.2.3.1", modality="CT"),
                         SeriesHeaders("1.2.3.2", tracer=(tracer,) if tracer else (), **series)))


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.toml"
    path.write_text(ROUTING.format(ae="ARCH", port=4242) + text)
    return path


def test_first_matching_rule_decides_on_one_series(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, ""))
    atsm = evaluate(config.routing, _headers(modality="PT", tracer="64Cu-ATSM"))
    assert (atsm.rule, atsm.action, atsm.profile, atsm.forward_to) == (
        "cu-atsm", "process", "atsm", ("ARCHIVE",))
    assert "tracer '64Cu-ATSM' ~ '*ATSM*'" in atsm.why
    assert evaluate(config.routing, _headers(modality="PT", tracer="18F-FDG")).rule == \
        "fdg-staging"
    # The criteria of a rule must hold for one series: an ATSM tracer on a CT-only match fails.
    mixed = StudyHeaders("1.2", (), (), (SeriesHeaders("1", modality="PT"),
                                         SeriesHeaders("2", modality="CT", tracer=("64Cu-ATSM",))))
    fallback = evaluate(config.routing, mixed)
    assert fallback.rule == "default" and fallback.action == "ignore"
    assert "no rule matched" in fallback.why
    # Study-level criteria: the MR rule needs the SCANNER calling AE title.
    mr = _headers(modality="MR", station_name="MRI1")
    assert evaluate(config.routing, mr).rule == "mr-forward"
    other = StudyHeaders("1.2.3", ("OTHER",), (), mr.series)
    assert evaluate(config.routing, other).rule == "default"


def test_profile_overrides_quant_and_tracer_settings(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, '[quant.tracers."64Cu-ATSM"]\n'
                                           'hypoxic_thresholds = [3.0]\n'))
    settings = profile_config(config, "atsm").quant.to_settings()
    assert settings.tracers["64Cu-ATSM"].hypoxic_thresholds == (1.4,)
    assert settings.tracers["18F-FMISO"].hypoxic_thresholds == (1.4,)
    assert config.quant.to_settings().tracers["64Cu-ATSM"].hypoxic_thresholds == (3.0,)


@pytest.mark.parametrize(("extra", "message"), [
    ('[[routing.rules]]\nname = "x"\nprofile = "nope"\n',
     "routing.rules['x']: profile 'nope' is not defined"),
    ('[[routing.rules]]\nname = "y"\naction = "forward"\nforward_to = ["nowhere"]\n',
     "routing.rules['y'].forward_to: no destination 'nowhere'"),
    ('[[routing.rules]]\nname = "z"\naction = "forward"\n',
     "routing.rules['z'].forward_to: action = \"forward\" needs"),
    ('[[routing.rules]]\nname = "w"\nmodality = "re:(("\n',
     "routing.rules['w'].modality: 're:((' is not a regular expression"),
    ('[[routing.rules]]\nname = "u"\naction = "ignore"\nprofile = "atsm"\n',
     "routing.rules['u'].profile: only used with"),
    ('[[routing.rules]]\nname = "cu-atsm"\n', "rule name 'cu-atsm' is used twice"),
    ('[[routing.rules]]\nname = "v"\ncolour = "red"\n', "colour"),
])
def test_bad_rules_are_refused_naming_rule_and_key(tmp_path: Path, extra: str, message: str
                                                   ) -> None:
    with pytest.raises(ConfigError, match="routing") as error:
        load_config(_config(tmp_path, extra))
    assert message in str(error.value)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = start_orthanc(tmp_path / "archive", ae_title="ARCHIVE")
    yield pacs
    pacs.stop()


@pytest.mark.e2e
def test_mixed_studies_routed_by_their_rules(tmp_path: Path, archive: Orthanc,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    atsm = make_study(tracer="64Cu-ATSM", patient_id="ROUTE-ATSM", seed=41)
    fdg = make_study(tracer="18F-FDG", patient_id="ROUTE-FDG", seed=42)
    scanner = tmp_path / "scanner"
    files = [*write_study(atsm, scanner / "atsm"), *write_study(fdg, scanner / "fdg"),
             *_mr_study(scanner / "mr")]
    uids = {name: str(study.pet[0].StudyInstanceUID) for name, study in
            (("atsm", atsm), ("fdg", fdg))}
    uids["mr"] = str(pydicom.dcmread(files[-1]).StudyInstanceUID)
    node = start_test_node(tmp_path / "node", sections=ROUTING.format(
        ae=archive.ae_title, port=archive.dicom_port))
    assert node.http_port is not None
    try:
        sent = storescu(files, node.port, node.ae_title, calling_ae="SCANNER")
        assert sent.returncode == 0, sent.stderr

        def decided() -> dict[str, dict[str, object]]:
            status = http_json(node.http_port, "/api/status")
            return {d["study_instance_uid"]: d for d in status["routing"]}

        def settled() -> bool:
            found = decided()
            return (all(uid in found for uid in uids.values())
                    and found[uids["fdg"]]["outcome"] != "" and found[uids["mr"]]["outcome"] != ""
                    and found[uids["atsm"]]["forwarded"] == len(atsm.pet) + len(atsm.ct))

        wait_for(settled, 90, "three studies routed, forwarded and purged")
        decisions = decided()
        assert decisions[uids["atsm"]]["rule"] == "cu-atsm"
        assert decisions[uids["fdg"]]["rule"] == "fdg-staging"
        assert decisions[uids["fdg"]]["outcome"] == "purged: ignored, not processed"
        assert decisions[uids["mr"]]["rule"] == "mr-forward"
        assert decisions[uids["mr"]]["outcome"] == "purged: forwarded, not processed"

        def atsm_done() -> bool:
            study = http_json(node.http_port, f"/api/studies/{uids['atsm']}")
            assert study["state"] != "failed", study.get("error")
            return bool(study["state"] == "done")

        wait_for(atsm_done, 90, "the Cu-ATSM study processed")
        result = http_json(node.http_port, f"/api/studies/{uids['atsm']}")["result"]
        assert [h["threshold"] for h in result["lesions"][0]["hypoxic"]] == [1.4]
        # Ignored and forwarded-only studies cost no processing and are gone from the node.
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/metrics") as response:
            metrics = response.read().decode()
        assert "hypoxnode_studies_processed_total 1.0" in metrics
        for name in ("fdg", "mr"):
            assert not (node.data_dir / "instances" / uids[name]).exists()
        assert f"processing study {uids['fdg']}" not in node.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/") as response:
            page = response.read().decode()
        assert "<table id=routing>" in page and "fdg-staging" in page
        assert "tracer '18F-FDG' ~" in html.unescape(page)  # what a browser shows
    finally:
        assert node.stop() == 0, node.log()[-3000:]

    # Forwarded originals (the MR and the Cu-ATSM PET/CT) are byte-identical at Orthanc.
    held = {}
    for instance in archive.get("/instances"):
        data = archive.get_bytes(f"/instances/{instance}/file")
        held[str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data),
                                 stop_before_pixels=True).SOPInstanceUID)] = data
    forwarded = [f for f in files if "fdg" not in f.parts]
    assert len(forwarded) == 48 + 72 + 2
    for path in forwarded:
        original = path.read_bytes()
        sop_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert sop_uid in held, f"{path.name} not forwarded"
        assert _data_set_bytes(held[sop_uid]) == _data_set_bytes(original), path
    fdg_uids = {str(ds.SOPInstanceUID) for ds in [*fdg.pet, *fdg.ct]}
    assert not fdg_uids & set(held)

    # route-test says the same of the folder.
    config_path = node.config_path
    assert main(["route-test", str(scanner), "--config", str(config_path), "--calling-ae",
                 "SCANNER", "--json"]) == 0
    printed = {d["study_instance_uid"]: d["rule"] for d in json.loads(capsys.readouterr().out)}
    assert printed == {uids["atsm"]: "cu-atsm", uids["fdg"]: "fdg-staging",
                       uids["mr"]: "mr-forward"}
