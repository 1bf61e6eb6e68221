from task_api.fields import Email, Password
from task_api.schemas import InputModel


class LoginRequest(InputModel):
    email: Email
    password: Password


class RefreshRequest(InputModel):
    refresh_token: str
