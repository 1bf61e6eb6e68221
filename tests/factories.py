import factory
from sqlalchemy.orm import Session

from task_api.auth.passwords import hash_password
from task_api.models import Task, TaskPriority, TaskStatus, User

TEST_PASSWORD = "correct horse battery"
_TEST_HASH = hash_password(TEST_PASSWORD, rounds=4)


class UserFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = User
        sqlalchemy_session_persistence = "commit"

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password_hash = _TEST_HASH
    is_admin = False


class AdminFactory(UserFactory):
    is_admin = True


class TaskFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = Task
        sqlalchemy_session_persistence = "commit"

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Task {n}")
    description = ""
    status = TaskStatus.new
    priority = TaskPriority.medium


def bind(session: Session) -> None:
    for model_factory in (UserFactory, AdminFactory, TaskFactory):
        model_factory._meta.sqlalchemy_session = session
