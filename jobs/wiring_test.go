package jobs

import (
	cloudtasks "cloud.google.com/go/cloudtasks/apiv2"

	"casearchiver/archive"
	"casearchiver/fetch"
	"casearchiver/store"
)

// The real dependencies satisfy the interfaces this package declares.
var (
	_ RecordStore = (*store.Store)(nil)
	_ Runner      = (*archive.Archiver)(nil)
	_ Currency    = (*archive.Archiver)(nil)
	_ Searcher    = (*fetch.Client)(nil)
	_ TaskCreator = (*cloudtasks.Client)(nil)
	_ Submitter   = (*Local)(nil)
	_ Submitter   = (*CloudTasks)(nil)
)
