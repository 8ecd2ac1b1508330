//! pm2-compat
