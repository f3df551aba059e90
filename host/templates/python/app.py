"""The {{name}} normalizer: the host's built-in answer, refined where this
producer differs from the common conventions."""

import json
from typing import List

from componentize_py_types import Err, Ok, Result
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Descriptor, Error, Fields, KafkaRecord


class Normalize(exports.Normalize):
    def describe(self) -> Descriptor:
        return Descriptor(name="{{name}}", version="0.1.0")

    def normalize(self, input: KafkaRecord) -> Fields:
        # What the host would store without this module.
        fields = host.builtin_fields(input)
        try:
            doc = json.loads(input.value) if input.value is not None else None
        except ValueError:
            # Not JSON (or not UTF-8): the built-in answer stands. To refuse
            # a record instead: raise Err(Error_Unsupported("why")).
            return fields
        # This producer names the runner `courier_id`.
        payload = doc.get("payload") if isinstance(doc, dict) else None
        if fields.runner_id is None and isinstance(payload, dict):
            courier = payload.get("courier_id")
            if isinstance(courier, str):
                fields.runner_id = courier
        return fields

    def normalize_batch(self, records: List[KafkaRecord]) -> List[Result[Fields, Error]]:
        answers: List[Result[Fields, Error]] = []
        for record in records:
            try:
                answers.append(Ok(self.normalize(record)))
            except Err as refused:
                answers.append(refused)
        return answers
