//! The media plane of meetings.
