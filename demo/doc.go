// Package demo is a small stand-in for "PingBack", the chat product API that
// Tollgate fronts in the README walk-through. It knows nothing about tenants,
// plans or limits — that is the point: everything metered is enforced by the
// proxy in front of it. State is in memory and lost on restart.
package demo
