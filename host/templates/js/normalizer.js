// The {{name}} normalizer: the host's built-in answer, refined where this
// producer differs from the common conventions.
import host from "notification:normalizer/host@{{contract}}";

function describe() {
  return { name: "{{name}}", version: "0.1.0" };
}

function normalizeRecord(record) {
  // What the host would store without this module.
  const fields = host.builtinFields(record);
  let doc;
  try {
    doc = record.value == null ? null : JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(record.value));
  } catch {
    // Not JSON (or not UTF-8): the built-in answer stands. To refuse a
    // record instead: throw { tag: "unsupported", val: "why" }.
    return fields;
  }
  // This producer names the runner `courier_id`.
  const courier = doc?.payload?.courier_id;
  if (fields.runnerId == null && typeof courier === "string") {
    fields.runnerId = courier;
  }
  return fields;
}

function normalizeBatch(records) {
  return records.map((record) => {
    try {
      return { tag: "ok", val: normalizeRecord(record) };
    } catch (e) {
      if (e && typeof e === "object" && "tag" in e) return { tag: "err", val: e };
      throw e; // a bug: the host records it, with what was printed
    }
  });
}

// The exported interface `normalize`, its functions in camelCase.
const normalize = { describe, normalize: normalizeRecord, normalizeBatch };
export { normalize };
