"""English and French for the web UI.

Templates and pages write English text through `_()`; French comes from the
catalogue below (the first users are Belgian). The language is the one chosen
with the switch (a cookie), else the best match of the browser's
Accept-Language, else English. A unit test checks that every string the
templates and pages use has a French entry.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "tre_lang"

Translator = Callable[..., str]


def negotiate(accept_language: str | None, cookie: str | None) -> str:
    """The cookie wins; otherwise the highest-q supported language of the header."""
    if cookie in LANGUAGES:
        return cookie
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= i * 1e-6  # earlier tags win ties, as browsers intend
        if primary in LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best


def translator(lang: str) -> Translator:
    """`_("text", name=value)`: the French text (or the English one), then `str.format`."""
    table = FR if lang == "fr" else EN

    def _(text: str, /, **values: object) -> str:
        out = table.get(text, text)
        return out.format(**values) if values else out

    return _


EN: dict[str, str] = {
    # Identifiers the services use (states, purposes, legal bases…) as English labels.
    "draft": "draft", "submitted": "submitted", "in_review": "in review",
    "approved": "approved", "rejected": "rejected", "changes_requested": "changes requested",
    "withdrawn": "withdrawn", "active": "active", "expired": "expired", "revoked": "revoked",
    "exhausted": "exhausted", "pending": "pending", "approved_once": "approved once",
    "released": "released",
    "days_to_decision": "Days from first submission to decision",
    "days_permit_to_first_run": "Days from permit to first run",
    "days_run_to_release": "Days from run to released output",
    "approve": "approve", "reject": "reject", "request_changes": "request changes",
    "public_interest_health": "Public interest in public health",
    "policy_making": "Policy making and regulation",
    "statistics": "Official statistics",
    "education": "Education and teaching",
    "scientific_research": "Scientific research",
    "ai_training": "Training AI (research)",
    "improvement_of_care": "Improvement of care",
    "ehds_art_68_data_permit": "EHDS Art. 68 — data permit",
    "gdpr_6_1_e_9_2_i": "GDPR 6(1)(e) and 9(2)(i) — public interest in public health",
    "gdpr_6_1_e_9_2_j": "GDPR 6(1)(e) and 9(2)(j) — scientific research",
    "gdpr_6_1_a_9_2_a": "GDPR 6(1)(a) and 9(2)(a) — explicit consent",
    "pseudonymised": "pseudonymised", "anonymised": "anonymised",
    "imaging": "imaging", "clinical": "clinical",
    "record": "recorded", "withdraw": "withdrawn", "reconsent": "consent given again",
    "update": "updated",
    "dp_attestation": "Differential-privacy attestation within the permit's caps",
    "aggregates_only": "Only aggregates and model weights",
    "small_counts": "No count below the threshold",
    "membership_inference": "Membership-inference audit at each node",
    "queued": "queued", "running": "running", "completed": "completed", "failed": "failed",
    "cancelled": "cancelled",
}

FR: dict[str, str] = {
    # layout and navigation
    "Trusted research environment": "Environnement de recherche de confiance",
    "Federated health-data TRE": "TRE fédéré pour données de santé",
    "Home": "Accueil",
    "Transparency register": "Registre de transparence",
    "My requests": "Mes demandes",
    "Access requests": "Demandes d'accès",
    "Permits": "Autorisations",
    "Review queue": "File de revue",
    "Audit log": "Journal d'audit",
    "Log in": "Se connecter",
    "Log out": "Se déconnecter",
    "Language": "Langue",
    "Signed in as {name}": "Connecté·e en tant que {name}",
    "Roles": "Rôles",
    "Main navigation": "Navigation principale",
    "Data never leaves the hospital: models travel to the data, and every access is "
    "requested, reviewed, bounded and logged.":
        "Les données ne quittent jamais l'hôpital : les modèles vont vers les données, et "
        "chaque accès est demandé, examiné, limité et journalisé.",
    # home
    "Welcome": "Bienvenue",
    "Welcome, {name}": "Bienvenue, {name}",
    "What you can do here": "Ce que vous pouvez faire ici",
    "Log in with your institution's account to request access, review requests or "
    "audit the environment.":
        "Connectez-vous avec le compte de votre institution pour demander un accès, examiner "
        "des demandes ou auditer l'environnement.",
    "See which permits were granted or refused, and how long decisions take.":
        "Voyez quelles autorisations ont été accordées ou refusées, et le temps de décision.",
    "Write, submit and follow your data access requests.":
        "Rédigez, soumettez et suivez vos demandes d'accès aux données.",
    "Your permits, their privacy budget and expiry.":
        "Vos autorisations, leur budget de confidentialité et leur échéance.",
    "Requests waiting for your decision.": "Demandes en attente de votre décision.",
    "Read and verify the tamper-evident audit trail.":
        "Consultez et vérifiez la piste d'audit infalsifiable.",
    "Every permit granted or refused.": "Toutes les autorisations accordées ou refusées.",
    "All permits issued by the portal.": "Toutes les autorisations émises par le portail.",
    "Open": "Ouvrir",
    "Your account has no role in this environment yet. Ask an administrator.":
        "Votre compte n'a encore aucun rôle dans cet environnement. Adressez-vous à un "
        "administrateur.",
    # transparency
    "Permits granted": "Autorisations accordées",
    "Refusals": "Refus",
    "Decisions": "Décisions",
    "Median days to decision": "Délai médian de décision (jours)",
    "Every data permit the portal granted and every request it refused, as the EHDS "
    "asks. No personal data is shown.":
        "Chaque autorisation de données accordée et chaque demande refusée par le portail, "
        "comme le demande l'EHDS. Aucune donnée personnelle n'est affichée.",
    "No permit has been granted yet.": "Aucune autorisation n'a encore été accordée.",
    "No request has been refused.": "Aucune demande n'a été refusée.",
    "Title": "Titre",
    "Organisation": "Organisation",
    "Purpose": "Finalité",
    "Datasets": "Jeux de données",
    "Status": "Statut",
    "Issued": "Émise",
    "Expires": "Échéance",
    "Submitted": "Soumise",
    "Decided": "Décidée",
    "Justification": "Justification",
    "Privacy budget ε": "Budget de confidentialité ε",
    "Revocation reason": "Motif de révocation",
    "no decision yet": "aucune décision encore",
    # requests
    "New request": "Nouvelle demande",
    "You have no access request yet.": "Vous n'avez encore aucune demande d'accès.",
    "No access request yet.": "Aucune demande d'accès pour l'instant.",
    "Applicant": "Demandeur·euse",
    "Created": "Créée",
    "Days elapsed": "Jours écoulés",
    "Permit": "Autorisation",
    "Request": "Demande",
    "Edit": "Modifier",
    "Edit request": "Modifier la demande",
    "Submit for review": "Soumettre pour revue",
    "Withdraw": "Retirer",
    "Withdraw this request? This cannot be undone.":
        "Retirer cette demande ? C'est irréversible.",
    "Save draft": "Enregistrer le brouillon",
    "Save changes": "Enregistrer les modifications",
    "Cancel": "Annuler",
    "Back": "Retour",
    "Research question": "Question de recherche",
    "Requested variables": "Variables demandées",
    "One per line.": "Une par ligne.",
    "Privacy budget ε per dataset": "Budget de confidentialité ε par jeu de données",
    "δ": "δ",
    "App (model) to run": "Application (modèle) à exécuter",
    "Duration (days)": "Durée (jours)",
    "Legal basis": "Base juridique",
    "Data form": "Forme des données",
    "Expected outputs": "Résultats attendus",
    "Ethics approval reference": "Référence de l'avis éthique",
    "Minimum number of hospitals": "Nombre minimum d'hôpitaux",
    "Hospital (node)": "Hôpital (nœud)",
    "Dataset": "Jeu de données",
    "Add a dataset": "Ajouter un jeu de données",
    "Remove": "Supprimer",
    "Choose…": "Choisir…",
    "optional": "facultatif",
    "The request has errors; see the fields marked below.":
        "La demande contient des erreurs ; voir les champs signalés ci-dessous.",
    "Request details": "Détails de la demande",
    "Reviews": "Revues",
    "No review yet.": "Aucune revue pour l'instant.",
    "Round {n}": "Tour {n}",
    "Reviewer": "Examinateur·rice",
    "Decision": "Décision",
    "Rationale": "Justification",
    "Conditions": "Conditions",
    "Review round": "Tour de revue",
    "Request saved as a draft. Submit it when it is complete.":
        "Demande enregistrée comme brouillon. Soumettez-la lorsqu'elle est complète.",
    "Request submitted for review.": "Demande soumise pour revue.",
    "Request withdrawn.": "Demande retirée.",
    "Changes saved.": "Modifications enregistrées.",
    "No app is registered yet; an administrator must register one first.":
        "Aucune application n'est encore enregistrée ; un administrateur doit d'abord en "
        "enregistrer une.",
    "The committee asked for changes: edit the request, then submit it again.":
        "Le comité a demandé des modifications : modifiez la demande puis soumettez-la à "
        "nouveau.",
    "This request can no longer be edited.": "Cette demande ne peut plus être modifiée.",
    "Yes": "Oui",
    "No": "Non",
    # states
    "draft": "brouillon",
    "submitted": "soumise",
    "in_review": "en revue",
    "approved": "approuvée",
    "rejected": "rejetée",
    "changes_requested": "modifications demandées",
    "withdrawn": "retirée",
    "active": "active",
    "expired": "expirée",
    "revoked": "révoquée",
    "exhausted": "épuisée",
    # decisions
    "approve": "approuver",
    "reject": "rejeter",
    "request_changes": "demander des modifications",
    "Approve": "Approuver",
    "Reject": "Rejeter",
    "Request changes": "Demander des modifications",
    # purposes
    "public_interest_health": "Intérêt public en santé",
    "policy_making": "Élaboration des politiques",
    "statistics": "Statistiques",
    "education": "Enseignement",
    "scientific_research": "Recherche scientifique",
    "ai_training": "Entraînement d'IA",
    "improvement_of_care": "Amélioration des soins",
    # legal bases
    "ehds_art_68_data_permit": "EHDS art. 68 — autorisation de données",
    "gdpr_6_1_e_9_2_i": "RGPD 6(1)(e) et 9(2)(i) — intérêt public en santé publique",
    "gdpr_6_1_e_9_2_j": "RGPD 6(1)(e) et 9(2)(j) — recherche scientifique",
    "gdpr_6_1_a_9_2_a": "RGPD 6(1)(a) et 9(2)(a) — consentement explicite",
    "pending": "en attente",
    "approved_once": "approuvée une fois",
    "released": "libérée",
    "record": "enregistrement",
    "withdraw": "retrait",
    "reconsent": "nouveau consentement",
    "update": "modification",
    "imaging": "imagerie",
    "clinical": "clinique",
    "dp_attestation": "Attestation de confidentialité différentielle dans les plafonds",
    "aggregates_only": "Uniquement des agrégats et des poids de modèle",
    "small_counts": "Aucun effectif sous le seuil",
    "membership_inference": "Audit d'inférence d'appartenance dans chaque nœud",
    "pseudonymised": "pseudonymisées",
    "anonymised": "anonymisées",
    # review
    "Requests awaiting your decision": "Demandes en attente de votre décision",
    "Nothing is waiting for your review.": "Rien n'attend votre revue.",
    "Review": "Examiner",
    "Your decision": "Votre décision",
    "Explain your decision (at least 10 characters). Rejections are published in the "
    "transparency register.":
        "Expliquez votre décision (au moins 10 caractères). Les refus sont publiés dans le "
        "registre de transparence.",
    "Conditions on approval": "Conditions de l'approbation",
    "Leave empty to grant what was requested. The permit takes the strictest conditions "
    "of all approving reviewers.":
        "Laissez vide pour accorder ce qui a été demandé. L'autorisation retient les "
        "conditions les plus strictes de tous les approbateurs.",
    "Maximum ε": "ε maximal",
    "Maximum duration (days)": "Durée maximale (jours)",
    "Record decision": "Enregistrer la décision",
    "Decision recorded.": "Décision enregistrée.",
    "You applied for this request: someone else must review it.":
        "Vous êtes l'auteur·e de cette demande : quelqu'un d'autre doit l'examiner.",
    "You already reviewed this request in this round.":
        "Vous avez déjà examiné cette demande lors de ce tour.",
    "This request is not awaiting review.": "Cette demande n'attend pas de revue.",
    "Votes this round": "Votes de ce tour",
    # permits
    "You hold no permit yet.": "Vous ne détenez encore aucune autorisation.",
    "No permit yet.": "Aucune autorisation pour l'instant.",
    "Holder": "Titulaire",
    "App": "Application",
    "App hash": "Empreinte de l'application",
    "ε cap": "Plafond ε",
    "δ cap": "Plafond δ",
    "Signed permit (JWS)": "Autorisation signée (JWS)",
    "Nodes verify this token with the portal's public key before running anything.":
        "Les nœuds vérifient ce jeton avec la clé publique du portail avant toute exécution.",
    "Revoke permit": "Révoquer l'autorisation",
    "Reason": "Motif",
    "Revoke": "Révoquer",
    "Permit revoked.": "Autorisation révoquée.",
    "Revoked": "Révoquée",
    # audit
    "Verify chain": "Vérifier la chaîne",
    "Export (JSON lines)": "Exporter (lignes JSON)",
    "Entries {first}–{last} of {total}": "Entrées {first} à {last} sur {total}",
    "The log is empty.": "Le journal est vide.",
    "Time": "Heure",
    "Actor": "Acteur·rice",
    "Action": "Action",
    "Object": "Objet",
    "Details": "Détails",
    "Hash": "Empreinte",
    "First": "Début",
    "Previous": "Précédent",
    "Next": "Suivant",
    "Last": "Fin",
    "Filter by action": "Filtrer par action",
    "Filter": "Filtrer",
    "The chain is intact: {rows} entries, head {head}.":
        "La chaîne est intacte : {rows} entrées, tête {head}.",
    "The chain is broken at entry {seq}: {problem}":
        "La chaîne est rompue à l'entrée {seq} : {problem}",
    "Each entry's hash covers the previous entry's hash: editing, deleting or reordering "
    "any entry breaks the chain from there on.":
        "L'empreinte de chaque entrée couvre celle de l'entrée précédente : modifier, "
        "supprimer ou réordonner une entrée rompt la chaîne à partir de là.",
    # catalogue and airlock
    "Catalogue": "Catalogue",
    "Airlock": "Sas de sortie",
    "My outputs": "Mes résultats",
    "Which hospitals hold which datasets, with suppressed counts.":
        "Quels hôpitaux détiennent quels jeux de données, avec effectifs masqués.",
    "Every data access request and its decision.":
        "Chaque demande d'accès aux données et sa décision.",
    "Check what runs produced before anything leaves.":
        "Contrôlez ce que les exécutions ont produit avant toute sortie.",
    "Results of your runs, downloadable once released.":
        "Les résultats de vos exécutions, téléchargeables une fois libérés.",
    "Each hospital's node publishes what it holds. Counts below the suppression threshold "
    "are shown as a range, never exactly.":
        "Le nœud de chaque hôpital publie ce qu'il détient. Les effectifs sous le seuil de "
        "masquage sont donnés comme un intervalle, jamais exactement.",
    "Published": "Publié",
    "Request access": "Demander l'accès",
    "No hospital has published a dataset yet.":
        "Aucun hôpital n'a encore publié de jeu de données.",
    "Output": "Résultat",
    "Run": "Exécution",
    "Files": "Fichiers",
    "File": "Fichier",
    "Size (bytes)": "Taille (octets)",
    "Download": "Télécharger",
    "Automated checks": "Contrôles automatiques",
    "{n} failed": "{n} en échec",
    "all passed": "tous réussis",
    "Awaiting your check": "En attente de votre contrôle",
    "Nothing is waiting for your check.": "Rien n'attend votre contrôle.",
    "Other outputs": "Autres résultats",
    "No output yet.": "Aucun résultat pour l'instant.",
    "Release needs two different output checkers; either can reject. Only released files "
    "can be downloaded, by the permit holder, and every download is logged.":
        "La libération exige deux contrôleur·euses différent·es ; chacun·e peut rejeter. Seuls "
        "les fichiers libérés peuvent être téléchargés, par le ou la titulaire de "
        "l'autorisation, et chaque téléchargement est journalisé.",
    "Privacy attestations of the nodes": "Attestations de confidentialité des nœuds",
    "Membership-inference advantage": "Avantage d'inférence d'appartenance",
    "Checks by people": "Contrôles humains",
    "Automated checks failed: this output can only be rejected.":
        "Des contrôles automatiques ont échoué : ce résultat ne peut qu'être rejeté.",
    "Approve release": "Approuver la libération",
    # model card (part of the airlock review)
    "Model card": "Fiche du modèle",
    "Built by the portal from the run's report, the permit and the access request when the "
    "output entered the airlock; released and downloaded with the model.":
        "Établie par le portail à partir du rapport de l'exécution, de l'autorisation et de la "
        "demande d'accès lorsque le résultat est entré dans le sas ; libérée et téléchargée "
        "avec le modèle.",
    "The model card on its own page": "La fiche du modèle sur sa propre page",
    "The card as JSON": "La fiche en JSON",
    "Intended use": "Usage prévu",
    "app": "application",
    "Datasets and hospitals": "Jeux de données et hôpitaux",
    "Training examples": "Exemples d'entraînement",
    "Excluded by consent": "Exclus par le consentement",
    "did not train": "n'a pas entraîné",
    "Privacy spent per node": "Confidentialité dépensée par nœud",
    "Noise multiplier": "Multiplicateur de bruit",
    "Steps per round": "Pas par tour",
    "Accountant": "Comptable de confidentialité",
    "Metrics": "Métriques",
    "test examples": "exemples de test",
    "Metric": "Métrique",
    "Value": "Valeur",
    "95 % interval": "Intervalle à 95 %",
    "none": "aucun",
    "Loss": "Perte",
    "Membership-inference audit": "Audit d'inférence d'appartenance",
    "Attack": "Attaque",
    "Advantage": "Avantage",
    "Chance alone": "Hasard seul",
    "Records": "Enregistrements",
    "Limitations": "Limites",
    # consent registry
    "Consent registry": "Registre des consentements",
    "Record, update and withdraw consents; import FHIR; prepare the activity report.":
        "Enregistrez, modifiez et retirez des consentements ; importez du FHIR ; préparez le "
        "rapport d'activité.",
    "Every organisation's consents and their history.":
        "Les consentements de chaque organisation et leur historique.",
    "Record a consent": "Enregistrer un consentement",
    "Import FHIR": "Importer du FHIR",
    "Export FHIR": "Exporter en FHIR",
    "Activity report": "Rapport d'activité",
    "Every change is a new version; nothing is ever deleted. Nodes pull the registry before "
    "every run.":
        "Chaque modification crée une nouvelle version ; rien n'est jamais supprimé. Les nœuds "
        "récupèrent le registre avant chaque exécution.",
    "Subject pseudonym": "Pseudonyme de la personne",
    "Purposes": "Finalités",
    "Valid from": "Valable à partir du",
    "Valid until": "Valable jusqu'au",
    "Version": "Version",
    "Registry version": "Version du registre",
    "Updated": "Mise à jour",
    "No consent matches.": "Aucun consentement ne correspond.",
    "The form has errors; see the fields marked below.":
        "Le formulaire contient des erreurs ; voir les champs signalés ci-dessous.",
    "Consent recorded.": "Consentement enregistré.",
    "Consent updated: a new version was recorded.":
        "Consentement modifié : une nouvelle version a été enregistrée.",
    "Consent withdrawn. Every node applies it before its next run.":
        "Consentement retiré. Chaque nœud l'appliquera avant sa prochaine exécution.",
    "Data subject": "Personne concernée",
    "The pseudonym the hospitals derive with the federation key; never a name or a national "
    "number.":
        "Le pseudonyme que les hôpitaux dérivent avec la clé de fédération ; jamais un nom ni "
        "un numéro national.",
    "Consent given": "Consentement donné",
    "Objection (opt-out)": "Opposition (opt-out)",
    "Note": "Note",
    "Record consent": "Enregistrer le consentement",
    "Consent": "Consentement",
    "Receipt for the data subject": "Reçu pour la personne concernée",
    "History": "Historique",
    "Change": "Changement",
    "Recorded": "Enregistrée",
    "Audit entry": "Entrée d'audit",
    "Withdraw consent": "Retirer le consentement",
    "Change purposes or validity": "Modifier les finalités ou la validité",
    "Re-activate the consent": "Réactiver le consentement",
    "Record a new version": "Enregistrer une nouvelle version",
    "Import FHIR consents": "Importer des consentements FHIR",
    "One FHIR R4 Consent resource or a Bundle of them. The import is all or nothing: one bad "
    "entry and nothing is recorded.":
        "Une ressource FHIR R4 Consent ou un Bundle de celles-ci. L'import est tout ou rien : "
        "une seule entrée invalide et rien n'est enregistré.",
    "Import done.": "Import terminé.",
    "Withdrawn": "Retirés",
    "Unchanged": "Inchangés",
    "FHIR JSON file": "Fichier JSON FHIR",
    "…or paste the JSON": "…ou collez le JSON",
    "Import": "Importer",
    "Choose a FHIR JSON file or paste its content.":
        "Choisissez un fichier JSON FHIR ou collez son contenu.",
    "The file is too large for the form; use the API for big imports.":
        "Le fichier est trop volumineux pour le formulaire ; utilisez l'API pour les gros "
        "imports.",
    "This is not valid JSON: {error}": "Ce n'est pas du JSON valide : {error}",
    "Material for the data-altruism organisation's annual activity report (Data Governance "
    "Act, Art. 20), drawn from the audit trail.":
        "Éléments du rapport d'activité annuel de l'organisation altruiste en matière de "
        "données (règlement sur la gouvernance des données, art. 20), tirés de la piste "
        "d'audit.",
    "Year": "Année",
    "Show": "Afficher",
    "Download (JSON)": "Télécharger (JSON)",
    "Consents at the end of the period": "Consentements en fin de période",
    "Subjects": "Personnes",
    "No consent yet.": "Aucun consentement pour l'instant.",
    "Permits that could draw on these consents":
        "Autorisations pouvant s'appuyer sur ces consentements",
    "ε spent": "ε dépensé",
    "No permit drew on this organisation's consents in that year.":
        "Aucune autorisation ne s'est appuyée sur les consentements de cette organisation "
        "cette année-là.",
    "Techniques applied": "Techniques appliquées",
    "Audit anchor": "Ancre d'audit",
    # errors
    "Access denied": "Accès refusé",
    "Not found": "Introuvable",
    "Something went wrong": "Une erreur s'est produite",
    "Your roles do not allow this page.": "Vos rôles ne permettent pas d'accéder à cette page.",
    "Your roles do not allow this action.": "Vos rôles ne permettent pas cette action.",
    "The form was refused because its security token is missing or out of date. Reload "
    "the page and try again.":
        "Le formulaire a été refusé car son jeton de sécurité est absent ou périmé. "
        "Rechargez la page et réessayez.",
    "Login failed": "Échec de la connexion",
    "This login link has expired or was already used. Please log in again.":
        "Ce lien de connexion a expiré ou a déjà été utilisé. Veuillez vous reconnecter.",
    "Back to the home page": "Retour à l'accueil",
    "Conflict": "Conflit",
    "Invalid input": "Saisie invalide",
    # validation messages
    "This field is required.": "Ce champ est obligatoire.",
    "Enter at least {n} characters.": "Saisissez au moins {n} caractères.",
    "Enter at most {n} characters.": "Saisissez au plus {n} caractères.",
    "Enter a number.": "Saisissez un nombre.",
    "Enter a whole number.": "Saisissez un nombre entier.",
    "Must be greater than {n}.": "Doit être supérieur à {n}.",
    "Must be at least {n}.": "Doit être au moins {n}.",
    "Must be less than {n}.": "Doit être inférieur à {n}.",
    "Must be at most {n}.": "Doit être au plus {n}.",
    "Choose one of the options.": "Choisissez une des options.",
    "Use only letters, digits and . _ : -": "Utilisez uniquement lettres, chiffres et . _ : -",
    "Give at least {n}.": "Indiquez-en au moins {n}.",
    "Give at most {n}.": "Indiquez-en au plus {n}.",
    "Unexpected field.": "Champ inattendu.",
    "Add at least one dataset.": "Ajoutez au moins un jeu de données.",
    # synthetic data on the dataset page
    "Synthetic data": "Données synthétiques",
    "Generated at the hospital and released because every privacy-gate check passed.":
        "Générées à l'hôpital et publiées parce que chaque contrôle de confidentialité a réussi.",
    "rows": "lignes",
    "Synthetic data available": "Données synthétiques disponibles",
    "Synthetic data withdrawn": "Données synthétiques retirées",
    "This synthetic version was withdrawn on {date} by {who} and can no longer be "
    "downloaded.":
        "Cette version synthétique a été retirée le {date} par {who} et ne peut plus être "
        "téléchargée.",
    # runs
    "queued": "en file", "running": "en cours", "completed": "terminée", "failed": "échouée",
    "cancelled": "annulée",
    "Runs": "Exécutions",
    "Start a run": "Lancer une exécution",
    "Rounds": "Tours",
    "Round": "Tour",
    "rounds": "tours",
    "No run yet.": "Aucune exécution pour l'instant.",
    "You hold no active permit.": "Vous ne détenez aucune autorisation active.",
    "Model": "Modèle",
    "Local epochs": "Époques locales",
    "Batch size": "Taille de lot",
    "Learning rate": "Taux d'apprentissage",
    "ε and δ default to the permit's caps; each hospital enforces them itself.":
        "ε et δ valent par défaut les plafonds de l'autorisation ; chaque hôpital les "
        "applique lui-même.",
    "Start": "Lancer",
    "Test AUC": "AUC de test",
    "Accuracy": "Exactitude",
    "ε per hospital": "ε par hôpital",
    "ε spent per hospital": "ε dépensé par hôpital",
    "Test AUC and ε per round": "AUC de test et ε par tour",
    "Output in the airlock": "Résultat dans le sas de sortie",
    "Cancel the run": "Annuler l'exécution",
    "My hospital": "Mon hôpital",
    "Feasibility": "Faisabilité",
    "Feasibility count": "Comptage de faisabilité",
    "Each hospital counts your cohort after applying consent; small counts are hidden.":
        "Chaque hôpital compte votre cohorte après application du consentement ; les petits "
        "comptes sont masqués.",
    "Labels (comma-separated)": "Étiquettes (séparées par des virgules)",
    "Modalities (comma-separated)": "Modalités (séparées par des virgules)",
    "Sex (comma-separated)": "Sexe (séparés par des virgules)",
    "Minimum age": "Âge minimum",
    "Maximum age": "Âge maximum",
    "Count": "Compter",
    "Counts per hospital": "Comptes par hôpital",
    "Hospital": "Hôpital",
    "Total": "Total",
    "any": "tous",
    "Your account is not linked to a hospital.": "Votre compte n'est lié à aucun hôpital.",
    "As the portal saw it; the node's own ledger is the authority on its budget.":
        "Tel que le portail l'a vu ; le registre du nœud fait foi pour son budget.",
    "ε spent per dataset": "ε dépensé par jeu de données",
    "No run has used this hospital's data.":
        "Aucune exécution n'a utilisé les données de cet hôpital.",
    "Runs on this hospital's data": "Exécutions sur les données de cet hôpital",
    "Researcher": "Chercheur",
    "Audit trail": "Journal d'audit",
    "Each party signs the head of its hash-chained audit log; an independent auditor "
    "checks the log against these checkpoints.":
        "Chaque partie signe la tête de son journal d'audit chaîné par hachage ; un auditeur "
        "indépendant vérifie le journal par rapport à ces points de contrôle.",
    "Party": "Partie",
    "Latest checkpoint": "Dernier point de contrôle",
    "Signed": "Signé",
    "Last independent verification": "Dernière vérification indépendante",
    "Verified": "Vérifié",
    "row {seq}": "ligne {seq}",
    "intact": "intact",
    "broken": "rompu",
    "checkpoint of row {seq}": "point de contrôle de la ligne {seq}",
    "not verified yet": "pas encore vérifié",
    "No checkpoint has been signed yet.": "Aucun point de contrôle n'a encore été signé.",
    "days_to_decision": "Jours de la première soumission à la décision",
    "days_permit_to_first_run": "Jours de l'autorisation à la première exécution",
    "days_run_to_release": "Jours de l'exécution au résultat libéré",
    "Indicators": "Indicateurs",
    "What the research environment hosted and how long access took, per quarter. Delays "
    "count from a request's first submission. No personal data is shown.":
        "Ce que l'environnement de recherche a accueilli et le temps qu'a pris l'accès, par "
        "trimestre. Les délais comptent depuis la première soumission d'une demande. Aucune "
        "donnée personnelle n'est affichée.",
    "The same figures as JSON": "Les mêmes chiffres en JSON",
    "Permits issued": "Autorisations délivrées",
    "Outputs released": "Résultats libérés",
    "Access delays": "Délais d'accès",
    "Median days per quarter; the tick marks the 90th percentile":
        "Jours médians par trimestre ; le trait marque le 90e centile",
    "median {median} days, 90th percentile {p90} days":
        "médiane {median} jours, 90e centile {p90} jours",
    "No access delay can be measured yet.": "Aucun délai d'accès ne peut encore être mesuré.",
    "Quarter": "Trimestre",
    "median / 90th percentile": "médiane / 90e centile",
}
