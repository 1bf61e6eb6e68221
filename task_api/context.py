"""What one request knows about itself, in one typed place.

RequestContextMiddleware makes it when the request arrives; the gate (gate.py) fills in the
caller and the rate-limit headers; the middleware writes those headers and the access log
line from it when the answer leaves.
"""

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from task_api.auth.tokens import Claims

STATE_KEY = "context"


@dataclass(slots=True)
class RequestContext:
    request_id: str
    gated: bool = False  # the gate has run: the budget is spent, the caller known
    caller: Claims | None = None  # a token whose login is alive and belongs to its subject
    refusal: str = "Not authenticated"  # why there is no caller
    rate_limit_headers: dict[str, str] = field(default_factory=dict)

    @property
    def user_id(self) -> int | None:
        return None if self.caller is None else self.caller.user_id


def request_context(connection: HTTPConnection) -> RequestContext:
    context: RequestContext = connection.scope["state"][STATE_KEY]
    return context
