"""schemathesis hooks for scripts/fuzz-api.sh (loaded through SCHEMATHESIS_HOOKS).

schemathesis has no serializer for NDJSON, the body of command-api's POST /api/v1/products/import:
a generated value is sent as one JSON line (an object is one product line; anything else is a
line the API must refuse as such, with a 200 and an error result, never a 5xx).
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    return (json.dumps(value) + "\n").encode()
