// Generated from the client API's endpoint declarations (client-api/src/*.rs) by
// web-client/tests/api_paths.rs: do not edit. `PARLEY_REGENERATE=1 cargo test -p
// parley-web --test api_paths` rewrites it; the same test fails when it is stale.

/** Each endpoint: its HTTP method, path template (`{name}` parameters) and auth. */
export const ENDPOINTS = Object.freeze({
  GetVersions: Object.freeze({ method: 'GET', path: '/_parley/client/versions', auth: 'none' }),
  GetClientApiDocument: Object.freeze({ method: 'GET', path: '/_parley/client/v1/openapi.json', auth: 'none' }),
  ApiReference: Object.freeze({ method: 'GET', path: '/_parley/docs', auth: 'none' }),
  Health: Object.freeze({ method: 'GET', path: '/_parley/health', auth: 'none' }),
  Ready: Object.freeze({ method: 'GET', path: '/_parley/ready', auth: 'none' }),
  GetMetrics: Object.freeze({ method: 'GET', path: '/_parley/metrics', auth: 'none' }),
  Register: Object.freeze({ method: 'POST', path: '/_parley/client/v1/register', auth: 'none' }),
  Login: Object.freeze({ method: 'POST', path: '/_parley/client/v1/login', auth: 'none' }),
  Refresh: Object.freeze({ method: 'POST', path: '/_parley/client/v1/refresh', auth: 'none' }),
  Logout: Object.freeze({ method: 'POST', path: '/_parley/client/v1/logout', auth: 'access_token' }),
  WhoAmI: Object.freeze({ method: 'GET', path: '/_parley/client/v1/whoami', auth: 'access_token' }),
  ListDevices: Object.freeze({ method: 'GET', path: '/_parley/client/v1/devices', auth: 'access_token' }),
  DeleteDevice: Object.freeze({ method: 'DELETE', path: '/_parley/client/v1/devices/{device_id}', auth: 'access_token' }),
  BindSignatureKey: Object.freeze({ method: 'PUT', path: '/_parley/client/v1/devices/{device_id}/signature_key', auth: 'access_token' }),
  UserDevices: Object.freeze({ method: 'GET', path: '/_parley/client/v1/users/{user_id}/devices', auth: 'access_token' }),
  UploadKeys: Object.freeze({ method: 'POST', path: '/_parley/client/v1/keys/upload', auth: 'access_token' }),
  KeyCount: Object.freeze({ method: 'GET', path: '/_parley/client/v1/keys/count', auth: 'access_token' }),
  ClaimKeys: Object.freeze({ method: 'POST', path: '/_parley/client/v1/keys/claim', auth: 'access_token' }),
  CreateGroup: Object.freeze({ method: 'POST', path: '/_parley/client/v1/groups', auth: 'access_token' }),
  ListGroups: Object.freeze({ method: 'GET', path: '/_parley/client/v1/groups', auth: 'access_token' }),
  SubmitCommit: Object.freeze({ method: 'POST', path: '/_parley/client/v1/groups/{group_id}/commit', auth: 'access_token' }),
  SendMessage: Object.freeze({ method: 'PUT', path: '/_parley/client/v1/groups/{group_id}/send/{txn_id}', auth: 'access_token' }),
  Sync: Object.freeze({ method: 'GET', path: '/_parley/client/v1/sync', auth: 'access_token' }),
  DeleteWelcome: Object.freeze({ method: 'DELETE', path: '/_parley/client/v1/welcomes/{id}', auth: 'access_token' }),
  WebSocket: Object.freeze({ method: 'GET', path: '/_parley/client/v1/ws', auth: 'none' }),
});
