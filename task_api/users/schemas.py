from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from task_api.fields import Email, Password, Storable
from task_api.schemas import InputModel
from task_api.users.models import NAME_MAX_LENGTH

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX_LENGTH), Storable]


class UserCreate(InputModel):
    email: Email
    password: Password
    name: Name | None = None


class AdminUserCreate(UserCreate):
    is_admin: bool = False


class PasswordChange(InputModel):
    password: Password | None = None
    current_password: Password | None = Field(default=None, description="Required to change your own password")


class UserUpdate(PasswordChange):
    """PATCH /users/me: only the fields sent change."""

    email: Email = Field(default=None)  # type: ignore[assignment]  # may be left out, never null
    name: Name | None = None


class UserReplace(PasswordChange):
    """PUT /users/{id}: omitted `name` becomes null; omitted `is_admin` stays as it is."""

    email: Email
    name: Name | None = None
    is_admin: bool = Field(default=None, description="Only an admin may change it")  # type: ignore[assignment]


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str | None
    is_admin: bool
    created_at: datetime
