// Package fetch is the client of the Cortex XSIAM / XSOAR tenant API used by the archiver.
//
// One *Client talks to one tenant. It is safe for concurrent use, and every concurrent caller shares
// the client's limits: a tenant-wide token bucket (Config.RequestsPerSecond, default 10/s, burst 1),
// a second bucket for get_incident_extra_data (Config.ExtraDataPerMinute, default 10/min, burst 1)
// and an in-flight cap (Config.MaxConcurrent, default 8). Every HTTP attempt, including retries,
// takes a slot and a token; a call waiting for an extra-data token does not hold a slot meanwhile.
//
// # Products and routes
//
//	call              XSIAM                                         XSOAR 8                      XSOAR 6
//	GetIncident       POST /public_api/v1/incidents/get_incidents   POST /xsoar/incidents/search POST /incidents/search
//	SearchIncidents   same                                          same                         same
//	GetExtraData      POST /public_api/v1/incidents/get_incident_extra_data   (no such API on XSOAR: see GetExtraData)
//	GetEntries        POST /xsoar/investigation/{id}                same                         POST /investigation/{id}
//	GetContext        POST /xsoar/investigation/{id}/context        same                         POST /investigation/{id}/context
//	Download          GET  /xsoar/entry/download/{n}%40{inv}        same                         GET /entry/download/{n}%40{inv}
//	GetRiskyUsers     POST /public_api/v1/get_risky_users           not applicable (Enabled=false, no call)
//
// public_api replies are unwrapped from their {"reply": ...} envelope; /xsoar routes return raw
// objects. What the tenant returned is kept as json.RawMessage for the archive; only the fields the
// orchestration needs are decoded, tolerating type drift (ids as strings or numbers, epoch
// milliseconds or RFC 3339 times, "No"/false booleans).
//
// On XSIAM every alert owns a war room whose investigation id is the alert id; on XSOAR the
// investigation id is the incident id (Incident.InvestigationID when the tenant reports one).
//
// # War-room paging
//
// GetEntries sends {"pageSize": N} and then {"pageSize": N, "lastID": "<id of the last entry
// received>"}; the tenant answers the entries strictly after lastID, oldest first, with
// "totalEntries". Paging stops once totalEntries entries were read (or, without totalEntries, on a
// short page) and always on an empty page, so a tenant serving smaller pages than asked for is
// read completely; an entry returned twice (a cursor that does not advance) is an error rather than
// an endless loop. The simulator in fetch/cortexsim implements the same contract.
//
// # Searching
//
// SearchIncidents pages by 100 sorted by creation time ascending. get_incidents caps total_count at
// 10,000 and deep offsets are not served, so when a query reports 10,000 or more matches the creation
// time range is split in halves (millisecond bounds, both inclusive) until every window holds fewer;
// results are de-duplicated by incident id.
//
// # Errors and retries
//
// Failures carry an *APIError (HTTP status, err_code, err_msg, err_extra) and match the sentinels
// ErrNotFound, ErrUnauthorized, ErrForbidden, ErrRateLimited and ErrUpstream with errors.Is. 429,
// 5xx other than business errors, connection resets, truncated bodies and timeouts are retried with
// exponential backoff and jitter (Retry-After honoured) within Config.MaxAttempts and
// Config.MaxRetryWait; Retryable reports whether a returned error is such a transient failure. A
// business 500 ("Incident not found", "... was not found") is ErrNotFound at once. The API key
// never appears in an error, a log line or a URL.
package fetch
