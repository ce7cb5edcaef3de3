"""A signed-in user's own account (password, sign-in sessions), and the one-time links sent by e-mail
(invitations, password resets) that let a person set a password without being signed in."""
