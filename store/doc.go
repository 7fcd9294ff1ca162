// Package store is the archive store: create-only, checksummed objects in a
// Google Cloud Storage bucket (under a key prefix) or in a local directory.
//
// Both backends obey one contract, checked by one conformance suite:
//
//   - Create streams an object of unknown size, computing size, SHA-256 and
//     CRC32C on the fly. It never overwrites (ErrExists) and, if the source
//     fails or ctx ends, creates nothing.
//   - Open streams and verifies the CRC32C at EOF; Stat returns size,
//     CRC32C, MD5 (GCS), SHA-256 (where recorded), content type, metadata,
//     created and custom time; List pages through keys in lexical order and
//     folds "subdirectories" into IsPrefix entries with delimiter "/".
//   - Errors carry a small vocabulary: ErrExists, ErrNotFound,
//     ErrPermission, ErrRetention, ErrTransient, ErrInvalidKey,
//     ErrInvalidMetadata, ErrIntegrity.
//
// The store never deletes or updates objects, so its service account needs
// storage.objects.create, .get and .list only (roles/storage.objectCreator
// plus roles/storage.objectViewer), and a bucket retention policy can be
// locked without breaking it.
//
// Memory is bounded by Options.ChunkSize: see Options for the formula.
// Integrity guarantees of the GCS path are described on gcsBackend (gcs.go),
// the on-disk layout and atomicity of the local path on localBackend
// (local.go).
package store
