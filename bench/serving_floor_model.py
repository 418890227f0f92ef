"""The floor model ``bench/serving_floor.py`` serves: answers every request with one
constant output, reading nothing. Imported by MLServer only."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Floor(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[ResponseOutput(name="label", shape=[1], datatype="INT64", data=[0])],
        )
