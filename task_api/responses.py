from collections.abc import Mapping

from fastapi import Response
from pydantic import BaseModel


class ModelResponse(Response):
    """The JSON of a model the endpoint has already built.

    Returning it (with `response_model=` on the route for the schema) spares FastAPI from
    validating the model a second time, which for a sync endpoint is one more threadpool step.
    """

    media_type = "application/json"

    def __init__(self, model: BaseModel, status_code: int = 200, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(model.model_dump_json(), status_code, headers)
