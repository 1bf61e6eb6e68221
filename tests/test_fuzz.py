"""Property-based fuzzing of every operation in /openapi.json: no input may produce a 500,
an undocumented status, or a body that does not match the documented schema."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import bearer, login
from tests.factories import TaskFactory, UserFactory

EXAMPLES_PER_OPERATION = 80
# Passwords are limited in UTF-8 bytes, which JSON Schema cannot state, so schema-valid
# multibyte passwords are rightly refused; every other check stays on.


@pytest.fixture
def fuzzed_app(make_app):
    return make_app(rate_limit="1000000/minute", auth_rate_limit="1000000/minute")


def operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_input_breaks_the_contract(fuzzed_app, client, db):
    admin = UserFactory(is_admin=True)
    TaskFactory.create_batch(3, owner=admin)
    headers = bearer(login(client, admin.email)["access_token"])

    for operation in operations(fuzzed_app):
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(case=cases)
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        call()
