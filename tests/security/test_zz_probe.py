import json
import httpx
from tests.conftest import MODEL


def test_probe(live_server, accounts, feature_rows):
    h = accounts["admin"].headers

    def call(method, url, **kw):
        with httpx.Client(base_url=live_server.url, headers=h, timeout=60) as c:
            try:
                r = c.request(method, url, **kw)
                print(method, url[:80], r.status_code, r.text[:300])
            except Exception as e:
                print("EXC", method, url[:80], repr(e))

    f = dict(feature_rows[0]); k = next(iter(f))
    def big(field, wrap):
        body = json.dumps({"model": MODEL, field: wrap(f)})
        return body.replace(json.dumps(k) + ": " + json.dumps(f[k]), json.dumps(k) + ": " + "9" * 500).encode()
    call("PUT", "/api/v1/admin/users/99999999999999999999999", json={"full_name": "x"})
    call("DELETE", "/api/v1/admin/users/99999999999999999999999")
    call("POST", "/v2/repository/index", content=b"{bad")
    call("POST", "/v2/repository/index", content=b"[1]")
    call("POST", "/predict", content=big("features", lambda x: x))
    call("POST", "/predict/batch", content=big("features_list", lambda x: [x]))
    call("POST", "/predict", content=b'{"model": "%s", "features": {"a": 1e400}}' % MODEL.encode())
    call("POST", "/predict", content=b'{"model": "x", "features": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    call("POST", "/api/v1/admin/users", content=b'{"username": ' + b"[" * 100000 + b"]" * 100000 + b"}", headers={"content-type": "application/json"})
    call("POST", f"/v2/models/{MODEL}/infer", json={"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 30], "data": [10**400] * 30}]})
    call("POST", f"/v2/models/{MODEL}/infer", json={"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 30], "data": [10**30] * 30}]})
    call("POST", f"/v2/models/{MODEL}/infer", content=b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 30], "data": [' + b",".join([b"1e400"] * 30) + b"]}]}")
    call("POST", f"/v2/models/{MODEL}/infer", content=b'{"inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    call("POST", "/invocations", content=b'{"inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    call("POST", "/invocations", content=b'{"dataframe_split": {"columns": ["a"], "data": [[' + b"9" * 500 + b"]]}}")
    call("POST", "/invocations", content=b'{"inputs": [[' + b"9" * 500 + b"]]}")
    call("POST", "/predict", content=b'{"model": "\xff\xfe", "features": {}}')
    call("POST", "/api/v1/admin/users", content=b'{"username": "\xff\xfe"}', headers={"content-type": "application/json"})
    call("GET", "/models/x/versions")
    call("GET", "/models/a..b/versions")
    call("POST", "/predict", json={"model": "runs:/abc/x", "features": {}})
    call("POST", "/predict", json={"model": "a..b", "features": {}})
    call("POST", "/predict", json={"model": "models:/a/99999999999999999999", "features": {}})
    call("GET", "/v2/models/a/versions/99999999999999999999999")
    call("GET", "/models/eurusd-direction/info", params={"version": "999999999"})
    call("GET", "/api/v1/admin/users", params={"q": "' OR 1=1 --"})
    call("POST", "/predict", json={"model": "' OR 1=1 --", "features": {}})
    call("POST", "/predict", json={"model": "file:///etc/passwd", "features": {}})
