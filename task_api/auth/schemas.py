from typing import Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from task_api.fields import Email, Password
from task_api.schemas import InputModel


class LoginRequest(InputModel):
    email: Email
    password: Password


class RefreshRequest(InputModel):
    refresh_token: str


def _username_as_email(data: Any) -> Any:
    if not isinstance(data, dict) or "username" not in data:
        return data
    if "email" in data:
        raise PydanticCustomError("username_and_email", "Send email or username, not both")
    return {("email" if key == "username" else key): value for key, value in data.items()}


UsernameAsEmail = BeforeValidator(_username_as_email)
"""`username` read as `email` in a JSON body, as clients of the `/auth/` layout send it."""
