// Package deploy holds what DocuVault is deployed with besides the
// repository root's docker-compose.yml and Dockerfile: the systemd units in
// systemd/ and the container health probe in healthcheck/.
//
// Its tests check the Compose file (with the official Compose loader), the
// Dockerfile and the units without a Docker engine or systemd, and show
// that each check fails on a file broken on purpose.
package deploy
