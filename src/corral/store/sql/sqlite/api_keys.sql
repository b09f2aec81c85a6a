-- API keys of the HTTP service (store/sql_keys.py). Same names in sqlite/ and postgres/.

-- name: insert_api_key
INSERT INTO corral_api_keys (id, key_hash, tenant, admin, label, created_at)
VALUES (:id, :key_hash, :tenant, :admin, :label, :now);

-- name: api_key_by_hash
SELECT id, tenant, admin, label, created_at, revoked_at FROM corral_api_keys
WHERE key_hash = :key_hash AND revoked_at IS NULL;

-- name: list_api_keys
SELECT id, tenant, admin, label, created_at, revoked_at FROM corral_api_keys
ORDER BY created_at, id;

-- name: revoke_api_key
UPDATE corral_api_keys SET revoked_at = :now
WHERE id = :id AND revoked_at IS NULL
RETURNING id;
