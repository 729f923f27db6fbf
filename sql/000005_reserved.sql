-- Placeholder for migration 5, reserved for the flow-control work on another branch (migrations
-- are numbered without gaps). Whoever merges both branches replaces this file with that one.
select 1;
