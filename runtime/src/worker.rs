//! The worker: connects out to the master and runs what it is sent.
