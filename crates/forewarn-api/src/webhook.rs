//! Alert webhook.
