// Read a SEG and a TID 1500 SR with dcmjs (the DICOM library of OHIF) and print what a
// viewer built on it gets: segment labels and display colours (CIELab decoded to RGB as OHIF
// does), the referenced series, and the SR's measurement groups with their NUM values.
// Usage: node read_dcmjs.mjs SEG.dcm SR.dcm  -> JSON on stdout.
import fs from "node:fs";
import dcmjs from "dcmjs";

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;

function read(path) {
  const buffer = fs.readFileSync(path);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const dicomData = DicomMessage.readFile(arrayBuffer);
  return DicomMetaDictionary.naturalizeDataset(dicomData.dict);
}

const asArray = (x) => (x === undefined ? [] : Array.isArray(x) ? x : [x]);

function segInfo(seg) {
  return {
    sopClassUID: seg.SOPClassUID,
    numberOfFrames: Number(seg.NumberOfFrames),
    referencedSeries: asArray(seg.ReferencedSeriesSequence).map((s) => s.SeriesInstanceUID),
    segments: asArray(seg.SegmentSequence).map((s) => ({
      number: s.SegmentNumber,
      label: s.SegmentLabel,
      cielab: s.RecommendedDisplayCIELabValue,
      rgb: dcmjs.data.Colors.dicomlab2RGB(s.RecommendedDisplayCIELabValue).map((v) =>
        Math.round(v * 255),
      ),
    })),
  };
}

function code(item, key = "ConceptNameCodeSequence") {
  const c = asArray(item[key])[0];
  return c ? `${c.CodingSchemeDesignator}:${c.CodeValue}` : "";
}

function srInfo(sr) {
  const groups = [];
  const walk = (items) => {
    for (const item of asArray(items)) {
      if (item.ValueType === "CONTAINER" && code(item) === "DCM:125007") {
        const content = asArray(item.ContentSequence);
        const tracking = content.find((c) => code(c) === "DCM:112039");
        groups.push({
          trackingIdentifier: tracking ? tracking.TextValue : null,
          measurements: content
            .filter((c) => c.ValueType === "NUM")
            .map((c) => ({
              concept: code(c),
              value: Number(asArray(c.MeasuredValueSequence)[0].NumericValue),
            })),
          scoords: content
            .filter((c) => c.ValueType === "SCOORD")
            .map((c) => ({
              graphicType: c.GraphicType,
              graphicData: asArray(c.GraphicData),
              referencedSOP: asArray(asArray(c.ContentSequence)[0]?.ReferencedSOPSequence)[0]
                ?.ReferencedSOPInstanceUID,
            })),
        });
      }
      walk(item.ContentSequence);
    }
  };
  walk(sr.ContentSequence);
  return { sopClassUID: sr.SOPClassUID, title: code(sr), groups };
}

const [segPath, srPath] = process.argv.slice(2);
console.log(JSON.stringify({ seg: segInfo(read(segPath)), sr: srInfo(read(srPath)) }));
