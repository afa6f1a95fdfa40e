//! The cron role: will fire each due scheduled task exactly once into the turn queue. Not
//! built yet; the crate exists so the layout and layering tests cover it from the start.
