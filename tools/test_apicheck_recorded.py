"""Unit tests of the recorded-response checker (tools/apicheck_recorded.py), against a small
spec written here, so that they say exactly what is flagged and what is not.

Run: `.venv/bin/python -m unittest discover -s tools -p 'test_*.py'` (scripts/test.sh does).
"""

import io
import json
import os
import tempfile
import unittest

import apicheck_recorded as ar

SPEC = """
openapi: 3.1.0
info: {title: toy compute, version: '2.96'}
paths:
  /v2.1/things:
    get:
      responses:
        '200':
          description: Ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ThingsList'}
    post:
      responses:
        '201':
          description: Ok
          content:
            application/json:
              schema: {type: object, required: [thing]}
  /v2.1/things/detail:
    get:
      responses:
        '200':
          description: Ok
          content:
            application/json:
              schema:
                type: object
                required: [detail]
                properties: {detail: {type: boolean}}
  /v2.1/things/{id}:
    get:
      responses:
        '200':
          description: Ok
          content:
            application/json:
              schema:
                type: object
                required: [thing]
                properties:
                  thing: {$ref: '#/components/schemas/Thing'}
                additionalProperties: false
  /v2.1/old-things:
    get:
      x-openstack: {min-ver: '2.1', max-ver: '2.35'}
      responses:
        '200':
          description: Ok
          content:
            application/json:
              schema: {type: object}
components:
  schemas:
    ThingsList:
      type: object
      required: [things]
      properties:
        things:
          type: array
          items: {$ref: '#/components/schemas/Thing'}
    Thing:
      type: object
      required: [id, name, size]
      additionalProperties: false
      properties:
        id: {type: string}
        name: {type: string}
        size: {type: integer, minimum: 0, exclusiveMinimum: true}
        tags:
          type: array
          items: {type: string}
          x-openstack: {min-ver: '2.26'}
"""


class RecordedCheckTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        os.makedirs(f"{self.dir.name}/compute")
        with open(f"{self.dir.name}/compute/v2.96.yaml", "w") as f:
            f.write(SPEC)

    def tearDown(self):
        self.dir.cleanup()

    def check(self, *records):
        path = f"{self.dir.name}/record.jsonl"
        with open(path, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        rep = ar.check_file(path, self.dir.name)
        out = io.StringIO()
        failing = ar.print_report(rep, out)
        return rep, failing, out.getvalue()

    @staticmethod
    def rec(path, body, status=200, version="2.1", method="GET"):
        return {
            "service": "compute",
            "method": method,
            "path": "/compute" + path,
            "status": status,
            "versions": {"openstack-api-version": f"compute {version}"},
            "body": body,
        }

    def test_conforming_answer_is_not_flagged(self):
        rep, failing, out = self.check(
            self.rec("/v2.1/things/1", {"thing": {"id": "1", "name": "a", "size": 1}}),
            self.rec("/v2.1/things?limit=1", {"things": [{"id": "1", "name": "a", "size": 3}]}),
            self.rec("/v2.1/things/1", {"thing": {"id": "1", "name": "a", "size": 1, "tags": []}}, version="2.26"),
        )
        self.assertEqual(failing, 0, out)
        self.assertEqual(rep.checked, 3)

    def test_missing_required_field_is_flagged(self):
        rep, failing, out = self.check(self.rec("/v2.1/things/1", {"thing": {"id": "1", "name": "a"}}))
        self.assertEqual(failing, 1, out)
        self.assertIn("'size' is a required property", out)
        self.assertIn("compute GET /v2.1/things/{id} -> 200", out)

    def test_wrong_type_is_flagged_through_refs_in_lists(self):
        rep, failing, out = self.check(
            self.rec("/v2.1/things", {"things": [{"id": 1, "name": "a", "size": 2}]}))
        self.assertEqual(failing, 1, out)
        self.assertIn("at things/*/id: type", out)

    def test_undocumented_field_in_a_closed_object_is_flagged(self):
        _, failing, out = self.check(
            self.rec("/v2.1/things/1", {"thing": {"id": "1", "name": "a", "size": 1, "colour": "red"}},
                     version="2.96"))
        self.assertEqual(failing, 1, out)
        self.assertIn("at thing/colour: additionalProperties: undocumented field", out)

    def test_field_outside_its_microversion_is_undocumented_there(self):
        # `tags` exists from 2.26: at 2.25 it is an undocumented field. At an older
        # microversion than the spec's newest, that is uncertain (printed, not failing)...
        rep, failing, out = self.check(
            self.rec("/v2.1/things/1", {"thing": {"id": "1", "name": "a", "size": 1, "tags": []}}, version="2.25"))
        self.assertEqual(failing, 0, out)
        self.assertIn("Uncertain", out)
        self.assertIn("at thing/tags: additionalProperties: undocumented field", out)
        # ...but a wrong type at that version still fails.
        _, failing, out = self.check(
            self.rec("/v2.1/things/1", {"thing": {"id": "1", "name": "a", "size": "big"}}, version="2.25"))
        self.assertEqual(failing, 1, out)

    def test_literal_path_wins_over_parameter(self):
        rep, failing, out = self.check(self.rec("/v2.1/things/detail", {"detail": True}))
        self.assertEqual(failing, 0, out)
        self.assertEqual(rep.checked, 1)

    def test_operation_outside_its_microversion_is_flagged(self):
        _, failing, out = self.check(self.rec("/v2.1/old-things", {}, version="2.36"))
        self.assertEqual(failing, 1, out)
        self.assertIn("only in 2.1..2.35", out)
        _, failing, _ = self.check(self.rec("/v2.1/old-things", {}, version="2.35"))
        self.assertEqual(failing, 0)

    def test_success_status_the_spec_does_not_document_is_flagged(self):
        _, failing, out = self.check(self.rec("/v2.1/things", {"thing": {}}, status=200, method="POST"))
        self.assertEqual(failing, 1, out)
        self.assertIn("answered 200; the spec documents 201", out)
        _, failing, out = self.check(self.rec("/v2.1/things", {"thing": {}}, status=201, method="POST"))
        self.assertEqual(failing, 0, out)

    def test_draft4_exclusive_minimum_is_read_as_meant(self):
        _, failing, out = self.check(self.rec("/v2.1/things/1", {"thing": {"id": "1", "name": "a", "size": 0}}))
        self.assertEqual(failing, 1, out)
        self.assertIn("exclusiveMinimum", out)

    def test_error_answers_are_checked_for_the_fault_format(self):
        good = self.rec("/v2.1/things/2", {"itemNotFound": {"code": 404, "message": "no thing 2"}}, status=404)
        bad = self.rec("/v2.1/things/2", {"message": "no thing 2"}, status=404)
        if "compute" not in ar.fault_checkers():
            self.skipTest("tools/apicheck.py needs `requests` for its fault checks")
        _, failing, out = self.check(good)
        self.assertEqual(failing, 0, out)
        _, failing, out = self.check(bad)
        self.assertEqual(failing, 1, out)
        self.assertIn("fault format", out)

    def test_allow_list_entries_are_narrow(self):
        # Keystone's object `links` is allowed; a wrong type elsewhere in the same answer is not.
        reason = ar.allowed_reason("identity", "get", "/v3/users", "links", "type")
        self.assertIsNotNone(reason)
        self.assertIsNone(ar.allowed_reason("identity", "get", "/v3/users", "users/*/name", "type"))
        self.assertIsNone(ar.allowed_reason("identity", "get", "/v3/users", "links", "required"))
        # A `null` entry allows a null only, never another wrong type.
        where = ("identity", "get", "/v3/domains/config/default", "config/ldap/url", "type")
        self.assertIsNotNone(ar.allowed_reason(*where, None))
        self.assertIsNone(ar.allowed_reason(*where, 5))
        # An entry bounded by a microversion applies up to it only.
        cpu = ("compute", "get", "/v2.1/os-hypervisors/detail", "hypervisors/*/cpu_info", "type", "{}")
        self.assertIsNotNone(ar.allowed_reason(*cpu, (2, 1)))
        self.assertIsNone(ar.allowed_reason(*cpu, (2, 28)))

    def test_negotiated_microversion_from_either_header(self):
        self.assertEqual(ar.negotiated({"openstack-api-version": "placement 1.10, compute 2.47"}, "compute"), (2, 47))
        self.assertEqual(ar.negotiated({"x-openstack-nova-api-version": "2.1"}, "compute"), (2, 1))
        self.assertIsNone(ar.negotiated({"openstack-api-version": "volume 3.0"}, "compute"))

    def test_unknown_paths_and_markers_are_reported_not_failed(self):
        rep, failing, out = self.check(
            self.rec("/v2.1/nowhere", {"x": 1}),
            {"dropped": 3},
        )
        self.assertEqual(failing, 0, out)
        self.assertIn("/v2.1/nowhere", out)
        self.assertIn("dropped", out)


if __name__ == "__main__":
    unittest.main()
