-- the procedures files define the two-argument version; an older release's define the one-argument one
DROP FUNCTION IF EXISTS centralcloud.refresh_statistics(timestamptz, timestamptz);
